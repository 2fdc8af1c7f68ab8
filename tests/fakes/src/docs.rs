//! The TOML examples of a notifier's page in `docs/notifiers/`, as the notifier's constructor gets them, so
//! each notifier's tests can check that its documented examples build. The daemon hands a notifier its
//! `[[notifier]]` table without the routing keys and with `${VAR:-default}` interpolated; so does this. It
//! reads the docs only: it checks nothing about what the notifier makes of the tables.

/// Keys the daemon takes out of a `[[notifier]]` table before the notifier sees it.
const HOST_KEYS: [&str; 13] = [
    "name",
    "type",
    "events",
    "every_n_epochs",
    "min_interval",
    "only_on_improvement",
    "rate_per_s",
    "burst",
    "timeout",
    "max_age",
    "quiet_hours",
    "timezone",
    "digest",
];

/// `${VAR:-default}` becomes `default`; `${VAR}` becomes `x-VAR`.
fn interpolate(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').expect("a closed ${...}");
        let inner = &after[..end];
        match inner.split_once(":-") {
            Some((_, default)) => out.push_str(default),
            None => out.push_str(&format!("x-{inner}")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The notifier tables of `kind` in `docs/notifiers/<kind>.md`, as the notifier's constructor gets them.
pub fn examples(kind: &str) -> Vec<toml::Table> {
    let path = format!("{}/../../docs/notifiers/{kind}.md", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    let mut tables = Vec::new();
    for block in text.split("```toml\n").skip(1) {
        let example = interpolate(block.split("```").next().expect("split yields a piece"));
        let doc: toml::Table = example.parse().unwrap_or_else(|e| panic!("{path}: {e}\n{example}"));
        let notifiers = doc.get("notifier").and_then(|n| n.as_array()).expect("a [[notifier]] table");
        for notifier in notifiers {
            let mut table = notifier.as_table().expect("a table").clone();
            assert_eq!(table.get("type").and_then(|t| t.as_str()), Some(kind), "{path}");
            for key in HOST_KEYS {
                table.remove(key);
            }
            tables.push(table);
        }
    }
    assert!(!tables.is_empty(), "no example in {path}");
    tables
}
