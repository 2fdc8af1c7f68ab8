//! `herald train`: hands over to the `herald-train` binary (crates/train), the way git runs its subcommands.
//!
//! The trainer links libtorch (about a gigabyte of shared libraries); keeping it out of this binary keeps
//! `herald serve` small in memory and `herald send` quick to start. This module only finds `herald-train`
//! (beside this executable, else on PATH) and replaces this process with it, passing `--config` on. Replacing,
//! not waiting: Ctrl-C reaches the whole foreground process group, and the trainer handles it (stops after the
//! current batch and reports the run as stopped); a waiting parent would die first and return the prompt.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// `herald train` arguments: everything is passed to `herald-train` as it is.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Options of herald-train (`herald train --help` shows them).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "ARGS")]
    args: Vec<OsString>,
}

/// The name of the trainer binary.
const TRAINER: &str = "herald-train";

pub fn run(config: Option<&Path>, args: Args) -> Result<()> {
    let Some(trainer) = find_trainer() else {
        bail!(
            "cannot find the {TRAINER} binary beside this one or on PATH: install it from the checkout with \
             `cargo install --locked --path crates/train` (it needs libtorch; see the README's Install section)"
        );
    };
    let mut cmd = std::process::Command::new(&trainer);
    if let Some(config) = config {
        cmd.arg("--config").arg(config);
    }
    cmd.args(&args.args);
    let err = cmd.exec();
    bail!("cannot run {}: {err}", trainer.display())
}

fn find_trainer() -> Option<PathBuf> {
    let beside = std::env::current_exe().ok()?.parent().map(|dir| dir.join(TRAINER));
    if let Some(path) = beside.filter(|p| p.is_file()) {
        return Some(path);
    }
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join(TRAINER)).find(|p| p.is_file())
}
