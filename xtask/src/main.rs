//! Project automation, run as `cargo xtask <command>` (aliased in `.cargo/config.toml`).
//!
//! - `setup`: installs what the demo and the tests need, idempotently; a second run with everything present
//!   takes seconds. `setup torch`: only torch, what `herald-train` needs to build.
//! - `test`: setup, then the format check, clippy with `-D warnings`, and every test.
//! - `demo`: installs torch when missing (nothing the tests alone need), then the project's main job (`herald
//!   train` on the digits data).
//! - `bench <name>`: the benchmarks that check the performance targets.
//!
//! Automation lives here rather than in shell scripts or Makefiles; `.ci/run` only calls `cargo xtask test`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

mod bench;
mod debian;
mod nats;
mod python;
mod setup;
mod torch;

const USAGE: &str = "usage: cargo xtask <setup|test|demo|bench NAME> [args]

  setup            install what the demo and the tests need (idempotent)
  setup torch      install only torch into .venv (what herald-train needs to build)
  test             setup, cargo fmt --check, clippy -D warnings, every test
  demo [ARGS]      torch if missing, then `herald train` on the digits data (ARGS go to herald train)
  bench NAME       run a benchmark: emitter, trainer, daemon, dashboard, ranks, rules, cluster, plugins,
                   apprise (docs name each one's figures)";

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    let root = project_root()?;
    std::env::set_current_dir(&root).with_context(|| format!("cannot enter {}", root.display()))?;
    match command.as_str() {
        "setup" if rest.iter().any(|a| a == "torch") => setup::for_demo(&root),
        "setup" => setup::run(&root),
        "test" => test(&root),
        "demo" => demo(&root, &rest),
        "bench" => bench::run(&root, &rest),
        "" | "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown xtask command `{other}`\n\n{USAGE}"),
    }
}

/// The workspace root: the folder above this crate.
fn project_root() -> Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.parent().context("xtask lives one level below the workspace root")?;
    Ok(root.to_path_buf())
}

fn test(root: &Path) -> Result<()> {
    setup::run(root)?;
    step("format check", cargo(&["fmt", "--all", "--", "--check"]))?;
    step("clippy", cargo(&["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))?;
    // The end-to-end tests drive the real binaries (herald, herald-train, the example plugin): build them.
    step("build the binaries", cargo(&["build", "--workspace", "--bins"]))?;
    if has_nextest() {
        step("tests (nextest)", cargo(&["nextest", "run", "--workspace", "--no-fail-fast"]))?;
    } else {
        step("tests", cargo(&["test", "--workspace", "--no-fail-fast"]))?;
    }
    // nextest does not run doctests.
    step("doctests", cargo(&["test", "--workspace", "--doc"]))?;
    Ok(())
}

fn demo(root: &Path, args: &[String]) -> Result<()> {
    // Only torch: the Python test frameworks and the notifier tests' Debian packages are for `test`.
    setup::for_demo(root)?;
    // The `demo` profile: optimized, without release's slow whole-program LTO (see Cargo.toml).
    step(
        "build herald (demo profile)",
        cargo(&["build", "--profile", "demo", "-p", "herald", "-p", "herald-train"]),
    )?;
    let bin = target_dir(root).join("demo/herald");
    let mut cmd = Command::new(&bin);
    cmd.arg("train").args(args);
    eprintln!("xtask: herald train");
    // Become the trainer rather than wait for it: Ctrl-C reaches the whole foreground process group, and a
    // waiting xtask would die at the first one while the trainer still stops cleanly and reports.
    let err = std::os::unix::process::CommandExt::exec(&mut cmd);
    bail!("cannot run {}: {err}", bin.display())
}

/// A `cargo` command with this workspace's toolchain.
pub(crate) fn cargo(args: &[&str]) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args(args);
    // A criterion bench runs in its crate's folder and would write `<crate>/target/criterion` there.
    // `main` runs in the workspace root, so the current folder names the target folder.
    if args.first() == Some(&"bench")
        && std::env::var_os("CRITERION_HOME").is_none()
        && let Ok(root) = std::env::current_dir()
    {
        cmd.env("CRITERION_HOME", target_dir(&root).join("criterion"));
    }
    cmd
}

/// The workspace's target folder: `CARGO_TARGET_DIR`, else `<root>/target`.
pub(crate) fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

fn has_nextest() -> bool {
    cargo(&["nextest", "--version"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Run one step, saying what it is, and fail with its name when it fails.
pub(crate) fn step(name: &str, mut cmd: Command) -> Result<()> {
    eprintln!("xtask: {name}");
    let status = cmd.status().with_context(|| format!("{name}: cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{name} failed ({status})");
    }
    Ok(())
}
