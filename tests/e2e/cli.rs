//! The command line itself.

use crate::herald;

#[test]
fn help_names_the_global_config_option() {
    let out = herald().arg("--help").output().expect("the herald binary runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("--config <PATH>"), "{text}");
}

/// Runs `herald --config <file with config> ARGS` with `RUST_BACKTRACE=1` and checks that it fails with exit
/// code 1 and one `herald: ` line holding `expected`, and no backtrace or anyhow `Debug` form.
fn check_user_error(name: &str, config: &str, args: &[&str], expected: &str) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the scratch folder");
    let path = dir.join("herald.toml");
    std::fs::write(&path, config.replace("{dir}", &dir.display().to_string())).expect("write the config");
    let out = herald()
        .arg("--config")
        .arg(&path)
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .env("RUST_LIB_BACKTRACE", "1")
        .output()
        .expect("the herald binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
    let expected = expected.replace("{config}", &path.display().to_string());
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains(&expected)).collect();
    assert_eq!(lines.len(), 1, "{name}: one line saying {expected:?} in\n{stderr}");
    assert!(lines[0].starts_with("herald: "), "{name}: {stderr}");
    // anyhow's Debug form starts with `Error: `, lists `Caused by:` and ends with the numbered frames.
    let debug_form = stderr
        .lines()
        .any(|l| l.starts_with("Error: ") || l.starts_with("Caused by") || l.trim_start().starts_with("0: "));
    let backtrace = stderr.to_lowercase().contains("backtrace") || stderr.contains("panicked");
    assert!(!debug_form && !backtrace, "{name}: {stderr}");
}

#[test]
fn user_errors_print_one_line_and_no_backtrace_even_with_rust_backtrace() {
    check_user_error(
        "no-token",
        "[daemon]\nlisten = \"0.0.0.0:1\"\nsocket = \"\"\nstate_dir = \"{dir}/state\"\n",
        &["serve"],
        "is not a loopback address",
    );
    check_user_error("unknown-key", "[daemon]\nlisten_on = \"127.0.0.1:1\"\n", &["status"], "{config}:2:");
    check_user_error("train-no-data", "", &["train", "--data", "/nonexistent/digits.csv"], "no such file");
}
