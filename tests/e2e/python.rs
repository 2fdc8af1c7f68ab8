//! The Python client (`clients/python`): runs its unittest suites with the venv's Python, so `cargo xtask
//! test` covers them. One Rust test per Python module, so a failure names the area and the suites run in
//! parallel.
//!
//! `cargo xtask setup` installs the venv's packages (fastai, Keras, Lightning, transformers, the client in
//! editable mode). The suites that drive the real daemon get this target folder's `herald` binary through
//! `HERALD_BIN`. This module only launches and reports; what is checked lives in the Python tests.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the workspace root").to_path_buf()
}

/// Runs `python -m unittest -v MODULE` in `clients/python/tests` and fails with its output when a test fails.
fn unittest(module: &str, with_daemon: bool) {
    let root = root();
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `cargo xtask setup` (it creates .venv with torch, fastai, Keras, Lightning)",
        python.display()
    );
    let mut cmd = Command::new(&python);
    cmd.args(["-m", "unittest", "-v", module])
        .current_dir(root.join("clients/python/tests"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("HERALD_URL")
        .env_remove("HERALD_TOKEN")
        .env_remove("RANK")
        .env_remove("LOCAL_RANK");
    if with_daemon {
        cmd.env("HERALD_BIN", crate::herald_bin());
    }
    let out = cmd.output().expect("the venv's Python runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python -m unittest {module} failed ({}):\n{}\n{stderr}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    // unittest prints "OK" (possibly with skips) last; a run that collected nothing would say "Ran 0 tests".
    assert!(!stderr.contains("Ran 0 tests"), "python -m unittest {module} ran no test:\n{stderr}");
}

#[test]
fn python_wire_format() {
    unittest("test_wire", false);
}

#[test]
fn python_client_spool_replay_stop() {
    unittest("test_client", false);
}

#[test]
fn python_notify_and_plain_loop() {
    unittest("test_notify", false);
}

#[test]
fn python_fastai_callback() {
    unittest("test_fastai", false);
}

#[test]
fn python_keras_lightning_transformers_callbacks() {
    unittest("test_frameworks", false);
}

#[test]
fn python_against_the_real_daemon() {
    unittest("test_daemon", true);
}

#[test]
fn python_alerts_reach_the_phone_before_the_end() {
    unittest("test_alerts", true);
}

#[test]
fn python_distributed_ranks_and_job_ids() {
    unittest("test_ranks", false);
}
