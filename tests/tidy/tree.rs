//! Reading the tree for the tidy checks: the workspace root, the `Cargo.toml` files and the `.rs` files under
//! a folder, skipping build outputs (`target/`), the Python environment (`.venv/`) and hidden folders. Paths
//! come back sorted, so messages come in a stable order. It panics with the path when a file cannot be read:
//! a tidy test that cannot see the tree has nothing to say.

use std::fs;
use std::path::{Path, PathBuf};

/// Folders never walked into: build outputs, the Python environment, caches.
const SKIPPED: &[&str] = &["target", "node_modules", "__pycache__"];

/// The workspace root (`tests/` sits in it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the workspace root").to_path_buf()
}

/// A file's text.
pub fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// `path` relative to `base`, with `/` separators.
pub fn relative(base: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(base).unwrap_or(path);
    rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/")
}

/// Every `Cargo.toml` under `root`, the root's own included.
pub fn manifests(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    walk(root, &mut |p| p.file_name().is_some_and(|n| n == "Cargo.toml"), &mut out);
    out
}

/// Every `.rs` file under `dir` (none when it does not exist).
pub fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    walk(dir, &mut |p| p.extension().is_some_and(|e| e == "rs"), &mut out);
    out
}

fn walk(dir: &Path, keep: &mut dyn FnMut(&Path) -> bool, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    paths.sort();
    for path in paths {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if path.is_dir() {
            if !name.starts_with('.') && !SKIPPED.contains(&name.as_str()) {
                walk(&path, keep, out);
            }
        } else if keep(&path) {
            out.push(path);
        }
    }
}
