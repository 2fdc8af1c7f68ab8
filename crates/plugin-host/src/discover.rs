//! Plugin discovery: an executable `herald-notify-<type>` on `PATH` or in `~/.local/share/herald/plugins` is
//! the plugin for `type = "<type>"` (`herald plugins` lists them).
//!
//! It only looks at names and permissions; it does not run what it finds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Executables named `herald-notify-<type>` are plugins for `type = "<type>"`.
pub const PREFIX: &str = "herald-notify-";

/// Whether `kind` can name a plugin executable (lowercase letters, digits, `-` and `_`).
fn valid_kind(kind: &str) -> bool {
    !kind.is_empty()
        && kind.len() <= 64
        && kind.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// The folders searched for `herald-notify-*`, in order: `PATH`, then `$XDG_DATA_HOME/herald/plugins`
/// (default `~/.local/share/herald/plugins`).
pub fn plugin_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    let data = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()).map(PathBuf::from).or_else(|| {
        std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".local/share"))
    });
    if let Some(data) = data {
        dirs.push(data.join("herald").join("plugins"));
    }
    dirs
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The executable `herald-notify-<kind>` in the first of [`plugin_dirs`] that has one.
pub fn discover(kind: &str) -> Option<PathBuf> {
    discover_in(kind, &plugin_dirs())
}

/// The executable `herald-notify-<kind>` in the first of `dirs` that has one.
pub fn discover_in(kind: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    if !valid_kind(kind) {
        return None;
    }
    dirs.iter().map(|d| d.join(format!("{PREFIX}{kind}"))).find(|p| is_executable(p))
}

/// Every plugin in [`plugin_dirs`] as `(type, path)`, sorted by type.
pub fn discover_all() -> Vec<(String, PathBuf)> {
    discover_all_in(&plugin_dirs())
}

/// Every plugin in `dirs` as `(type, path)`, sorted by type; the first folder wins for a type found twice.
pub fn discover_all_in(dirs: &[PathBuf]) -> Vec<(String, PathBuf)> {
    let mut found: BTreeMap<String, PathBuf> = BTreeMap::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        for entry in entries.flatten() {
            let file = entry.file_name();
            let Some(kind) = file.to_str().and_then(|f| f.strip_prefix(PREFIX)) else { continue };
            if valid_kind(kind) && !found.contains_key(kind) && is_executable(&entry.path()) {
                found.insert(kind.to_owned(), entry.path());
            }
        }
    }
    found.into_iter().collect()
}
