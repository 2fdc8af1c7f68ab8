//! End-to-end tests: they drive the real `herald` binary against local counterparts and assert on what
//! arrived. One test binary, one module per topic.
//!
//! The binary is the one cargo built beside this test (`target/<profile>/herald`); `cargo xtask test` builds
//! it first.

use std::path::PathBuf;
use std::process::Command;

mod apprise;
mod cli;
mod cluster;
mod cluster_edge;
mod cluster_status;
mod daemon;
mod dashboard;
mod install;
mod jobs;
mod phone_rules;
mod plugins;
mod python;
mod quiet;
mod rules;
mod slack;
mod telegram;
mod train;
mod watch;
mod webhook_batch;

/// The path of the `herald` binary built in this target folder.
pub fn herald_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary knows its own path");
    // target/<profile>/deps/e2e-<hash> -> target/<profile>/herald
    let dir =
        exe.parent().and_then(|deps| deps.parent()).expect("test binaries live in target/<profile>/deps");
    let bin = dir.join(format!("herald{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (`cargo xtask test` does)",
        bin.display()
    );
    bin
}

/// A command for the `herald` binary.
pub fn herald() -> Command {
    Command::new(herald_bin())
}

/// A child process killed when the test ends, passing or not (a failed assertion must not leave a trainer
/// running).
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
