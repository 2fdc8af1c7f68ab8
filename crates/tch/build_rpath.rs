//! The libtorch run-time search path (rpath) for binaries that link libtorch, shared by the build scripts of
//! herald-tch (its tests, examples and benches) and herald-train (the `herald-train` binary), which include it
//! with `#[path]`. LIBTORCH comes from `.cargo/config.toml` (`.venv/libtorch`, which `cargo xtask setup`
//! fills) or the environment.
//!
//! The search path is relative to the binary first (`$ORIGIN/../../.venv/libtorch/lib` for
//! `target/release/herald-train` in the checkout), so moving or copying the whole checkout keeps it working,
//! then the absolute folder as a fallback, for a binary copied out of the checkout (`cargo install` puts it in
//! `~/.cargo/bin`). LD_LIBRARY_PATH comes before both, for a libtorch elsewhere. libtorch_cuda stays linked so
//! CUDA devices are visible.

use std::path::{Component, Path, PathBuf};

/// Print the link arguments for the package whose build script calls this.
pub fn emit() {
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
