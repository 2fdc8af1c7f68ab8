//! libtorch for tch: torch 2.13.0 (the version tch 0.26 expects) in the git-ignored `.venv`, and the link
//! `.venv/libtorch` to its package folder that `.cargo/config.toml` points `LIBTORCH` at.
//!
//! The fast path asks the venv's Python for `torch.__version__` and only installs when that fails or
//! differs. Python packages the benchmarks need (fastai) are installed by the benchmark itself, not here.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The torch version tch 0.26 is built against.
pub const TORCH_VERSION: &str = "2.13.0";

/// The venv's Python.
pub fn python(root: &Path) -> PathBuf {
    root.join(".venv/bin/python")
}

/// Makes sure torch 2.13.0 is importable from `.venv` and `.venv/libtorch` points at it.
pub fn ensure(root: &Path) -> Result<()> {
    let venv = root.join(".venv");
    let py = python(root);
    if installed_version(&py).as_deref() != Some(TORCH_VERSION) {
        if !py.exists() {
            let base = base_python();
            eprintln!("xtask: creating {} with {}", venv.display(), base.display());
            run(Command::new(&base).args(["-m", "venv"]).arg(&venv), "create the venv")?;
        }
        eprintln!(
            "xtask: installing torch=={TORCH_VERSION} into .venv (about 4.7 GB with its CUDA libraries)"
        );
        run(
            Command::new(&py).args(["-m", "pip", "install", "--quiet", &format!("torch=={TORCH_VERSION}")]),
            "pip install torch",
        )?;
        match installed_version(&py) {
            Some(v) if v == TORCH_VERSION => {}
            other => {
                bail!("torch {TORCH_VERSION} is still not importable from {} (found {other:?})", py.display())
            }
        }
    }
    link_libtorch(root, &py)
}

/// `torch.__version__` without its local suffix (`2.13.0+cu130` -> `2.13.0`), if torch imports.
fn installed_version(py: &Path) -> Option<String> {
    let out = Command::new(py)
        .args(["-c", "import torch; print(torch.__version__)"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.lines().last()?.trim();
    Some(version.split('+').next().unwrap_or(version).to_owned())
}

/// Debian's Python where pyenv may shadow `python3`; else whatever `python3` is.
fn base_python() -> PathBuf {
    let debian = PathBuf::from("/usr/bin/python3");
    if debian.exists() { debian } else { PathBuf::from("python3") }
}

/// Points `.venv/libtorch` at the torch package folder (relative, so the checkout can move).
fn link_libtorch(root: &Path, py: &Path) -> Result<()> {
    let out = Command::new(py)
        .args([
            "-c",
            "import importlib.util, os; print(os.path.dirname(importlib.util.find_spec('torch').origin))",
        ])
        .output()
        .context("cannot ask the venv's Python where torch is")?;
    if !out.status.success() {
        bail!("the venv's Python cannot find torch: {}", String::from_utf8_lossy(&out.stderr));
    }
    let torch_dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let venv = root.join(".venv");
    let venv = venv.canonicalize().unwrap_or(venv);
    let torch_dir = torch_dir.canonicalize().unwrap_or(torch_dir);
    let target = torch_dir.strip_prefix(&venv).map(Path::to_path_buf).unwrap_or(torch_dir.clone());
    let link = venv.join("libtorch");
    if std::fs::read_link(&link).ok().as_deref() == Some(target.as_path()) && link.join("lib").is_dir() {
        return Ok(());
    }
    if link.symlink_metadata().is_ok() {
        std::fs::remove_file(&link).with_context(|| format!("cannot replace {}", link.display()))?;
    }
    std::os::unix::fs::symlink(&target, &link)
        .with_context(|| format!("cannot link {} to {}", link.display(), target.display()))?;
    if !link.join("lib/libtorch_cpu.so").exists() {
        bail!("{} has no lib/libtorch_cpu.so; the torch install looks incomplete", torch_dir.display());
    }
    eprintln!("xtask: linked .venv/libtorch -> {}", target.display());
    Ok(())
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd.status().with_context(|| format!("{what}: cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}
