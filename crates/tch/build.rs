//! Gives herald-tch's test, example and bench binaries a run-time search path (rpath) to libtorch's shared
//! libraries, so they run without LD_LIBRARY_PATH, and keeps libtorch_cuda linked so CUDA devices are visible.
//! LIBTORCH comes from `.cargo/config.toml` (`cargo xtask setup` fills the folder) or the environment.
//!
//! As in `crates/train/build.rs` (the same code): relative to the binary first, so the checkout can move, then
//! the absolute folder.

use std::path::{Component, Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let Some(dir) = std::env::var_os("LIBTORCH") else {
        return;
    };
    let lib = Path::new(&dir).join("lib");
    if let Some(rel) = profile_dir().and_then(|profile| relative(&profile, &lib)) {
        // Binaries in target/<profile>/, then tests in deps/ and examples in examples/, one level deeper.
        println!("cargo:rustc-link-arg=-Wl,-rpath,$ORIGIN/{}", rel.display());
        println!("cargo:rustc-link-arg=-Wl,-rpath,$ORIGIN/../{}", rel.display());
    }
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    // Nothing references libtorch_cuda's symbols directly, so the linker's --as-needed would drop it and
    // libtorch would see no CUDA device: keep it (tch's documented workaround) when this libtorch has it.
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}

/// `target/<profile>` (or `target/<triple>/<profile>`): cargo's OUT_DIR is `<that>/build/<package>-<hash>/out`.
fn profile_dir() -> Option<PathBuf> {
    let out = PathBuf::from(std::env::var_os("OUT_DIR")?);
    out.ancestors().nth(3).map(Path::to_path_buf)
}

/// `to` as seen from `from`, both absolute and free of `..`: `None` otherwise (the absolute rpath then serves
/// alone).
fn relative(from: &Path, to: &Path) -> Option<PathBuf> {
    let plain = |p: &Path| p.is_absolute() && p.components().all(|c| !matches!(c, Component::ParentDir));
    if !plain(from) || !plain(to) {
        return None;
    }
    let (from, to): (Vec<_>, Vec<_>) = (from.components().collect(), to.components().collect());
    let shared = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut rel: PathBuf = from[shared..].iter().map(|_| Component::ParentDir).collect();
    rel.extend(&to[shared..]);
    Some(rel)
}
