//! The Python packages the client's tests need, in the git-ignored `.venv` that `torch.rs` creates: fastai
//! 2.8.12, Keras 3, Lightning 2, transformers with accelerate, and `clients/python` installed in editable mode (the `herald`
//! import name); and the Apprise plugin (`plugins/apprise`, editable, with Apprise 2), whose console script
//! `.venv/bin/herald-notify-apprise` the end-to-end tests put on the daemon's PATH.
//!
//! The fast path is one Python call that reads the installed versions and where `herald` imports from; pip
//! runs only when something is missing or wrong. torch is pinned in the same pip call so that no framework
//! moves it away from the version tch expects. It does not create the venv or install torch (`torch.rs` does).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::torch::{TORCH_VERSION, python};

/// What pip installs, as requirement strings.
/// (transformers' Trainer needs accelerate.)
const REQUIREMENTS: [&str; 5] =
    ["fastai==2.8.12", "keras>=3,<4", "lightning>=2,<3", "transformers>=4.40,<6", "accelerate>=1.1"];

/// Prints one line per problem; nothing when everything the tests need is in place.
const CHECK: &str = r#"
import importlib.metadata as md, os, sys
want = {"fastai": lambda v: v == "2.8.12", "keras": lambda v: v.split(".")[0] == "3",
        "lightning": lambda v: v.split(".")[0] == "2", "transformers": lambda v: v.split(".")[0] in ("4", "5"),
        "accelerate": lambda v: int(v.split(".")[0]) >= 1}
for name, ok in want.items():
    try:
        v = md.version(name)
    except md.PackageNotFoundError:
        print(f"{name} is missing"); continue
    if not ok(v):
        print(f"{name} {v} is not the wanted version")
src = os.path.realpath(sys.argv[1])
try:
    import herald
    here = os.path.realpath(os.path.dirname(herald.__file__))
    if not here.startswith(src + os.sep):
        print(f"herald imports from {here}, not {src}")
except ImportError:
    print("herald (clients/python) is not installed")
"#;

/// Prints one line per problem with the Apprise plugin; nothing when it is in place. Finds the package without
/// importing it (importing Apprise takes a quarter of a second).
const CHECK_APPRISE: &str = r#"
import importlib.metadata as md, importlib.util, os, sys
try:
    v = md.version("apprise")
    if v.split(".")[0] != "2":
        print(f"apprise {v} is not the wanted version (2.x)")
except md.PackageNotFoundError:
    print("apprise is missing")
src = os.path.realpath(sys.argv[1])
spec = importlib.util.find_spec("herald_notify_apprise")
if spec is None or spec.origin is None:
    print("herald-notify-apprise (plugins/apprise) is not installed")
elif not os.path.realpath(spec.origin).startswith(src + os.sep):
    print(f"herald_notify_apprise imports from {os.path.dirname(spec.origin)}, not {src}")
if not os.path.exists(os.path.join(sys.prefix, "bin", "herald-notify-apprise")):
    print("the herald-notify-apprise command is missing from the venv")
"#;

/// Makes sure the Python test dependencies, the client and the Apprise plugin are installed in `.venv`.
pub fn ensure(root: &Path) -> Result<()> {
    let py = python(root);
    let src = root.join("clients/python/src");
    ensure_apprise(root, &py)?;
    let problems = check(&py, &src)?;
    if problems.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: Python test packages: {}; installing", problems.join("; "));
    let torch = format!("torch=={TORCH_VERSION}");
    let mut pip = Command::new(&py);
    pip.args(["-m", "pip", "install", "--quiet", &torch]).args(REQUIREMENTS);
    run(&mut pip, "pip install the Python test packages")?;
    let mut editable = Command::new(&py);
    editable
        .args(["-m", "pip", "install", "--quiet", "--no-deps", "--editable"])
        .arg(root.join("clients/python"));
    run(&mut editable, "pip install -e clients/python")?;
    let left = check(&py, &src)?;
    if !left.is_empty() {
        bail!("after pip install: {}", left.join("; "));
    }
    Ok(())
}

/// `plugins/apprise` in editable mode with its dependency, Apprise 2, when either is missing.
pub(crate) fn ensure_apprise(root: &Path, py: &Path) -> Result<()> {
    let src = root.join("plugins/apprise/src");
    let problems = check_with(py, CHECK_APPRISE, &src)?;
    if problems.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: the Apprise plugin: {}; installing", problems.join("; "));
    let mut pip = Command::new(py);
    pip.args(["-m", "pip", "install", "--quiet", "--editable"]).arg(root.join("plugins/apprise"));
    run(&mut pip, "pip install -e plugins/apprise")?;
    let left = check_with(py, CHECK_APPRISE, &src)?;
    if !left.is_empty() {
        bail!("after pip install -e plugins/apprise: {}", left.join("; "));
    }
    Ok(())
}

fn check(py: &Path, src: &Path) -> Result<Vec<String>> {
    check_with(py, CHECK, src)
}

fn check_with(py: &Path, script: &str, src: &Path) -> Result<Vec<String>> {
    let out = Command::new(py)
        .args(["-c", script])
        .arg(src)
        .output()
        .with_context(|| format!("cannot run {} (run `cargo xtask setup`)", py.display()))?;
    if !out.status.success() {
        bail!("checking the Python packages failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect())
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd.status().with_context(|| format!("{what}: cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}
