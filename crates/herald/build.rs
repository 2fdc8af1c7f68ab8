//! Gives the `herald` binary an rpath to libtorch's shared libraries (it links herald-tch), so it runs
//! without LD_LIBRARY_PATH. LIBTORCH comes from `.cargo/config.toml`; `cargo xtask setup` fills the folder.

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Some(dir) = std::env::var_os("LIBTORCH") {
        let lib = std::path::Path::new(&dir).join("lib");
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    }
}
