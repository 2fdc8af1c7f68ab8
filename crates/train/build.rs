//! Gives the `herald` binary an rpath to libtorch's shared libraries (it links herald-tch), so it runs
//! without LD_LIBRARY_PATH, and keeps libtorch_cuda linked so `--device cuda` finds a GPU. LIBTORCH comes
//! from `.cargo/config.toml`; `cargo xtask setup` fills the folder.

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Some(dir) = std::env::var_os("LIBTORCH") {
        let lib = std::path::Path::new(&dir).join("lib");
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
        // Nothing references libtorch_cuda's symbols directly, so the linker's --as-needed would drop it and
        // libtorch would see no CUDA device: keep it (tch's documented workaround) when this libtorch has it.
        if lib.join("libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        }
    }
}
