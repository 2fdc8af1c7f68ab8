//! The conformance kit (`herald_plugin_host::conformance`) against this crate's own binary, as a plugin
//! author runs it from `cargo test`: the same checks as `herald plugin test -- herald-notify-gotify`, with the
//! fake Gotify server of `main.rs` standing in for the service. `docs/writing-a-notifier.md` shows the test.

use crate::Fake;

#[tokio::test]
async fn the_binary_passes_the_conformance_kit() {
    let fake = Fake::start().await; // a local stand-in for the Gotify server
    let config = serde_json::json!({ "url": format!("http://{}", fake.addr), "token": "good" });
    let plugin = env!("CARGO_BIN_EXE_herald-notify-gotify");
    let report = herald_plugin_host::conformance::check(&[plugin], config).await;
    assert!(report.passed(), "{}", report.table());
    assert_eq!(fake.received().len(), 5, "every delivery reached the server");
}

/// The guide shows the test above as it is.
#[test]
fn the_guide_shows_this_test() {
    let guide = include_str!("../../../../docs/writing-a-notifier.md");
    let this = include_str!("conformance.rs");
    let start = this.find("#[tokio::test]").expect("the test is in this file");
    let end = start + this[start..].find("\n}\n").expect("the test ends") + 3;
    assert!(guide.contains(&this[start..end]), "docs/writing-a-notifier.md shows:\n{}", &this[start..end]);
}
