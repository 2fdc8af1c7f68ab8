//! The command line itself.

use crate::herald;

#[test]
fn help_names_the_global_config_option() {
    let out = herald().arg("--help").output().expect("the herald binary runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("--config <PATH>"), "{text}");
}
