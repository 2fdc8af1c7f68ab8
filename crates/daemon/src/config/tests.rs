//! Tests of the configuration: defaults, every key, every error's file, line, column and key, the load
//! order, and that the examples in `config/` and the docs parse and build.

use std::path::{Path, PathBuf};
use std::time::Duration;

use herald_event::EventKind;
use herald_plugin::{Registry, Secret};
use toml::Value;

use super::daemon::DAEMON_KEYS;
use super::notifier::ROUTING_KEYS;
use super::*;
use crate::builtins::default_config_for;

fn env(name: &str) -> Option<String> {
    match name {
        "HOME" => Some("/home/ada".into()),
        "XDG_RUNTIME_DIR" => Some("/run/user/1000".into()),
        "HOOK_URL" => Some("http://127.0.0.1:9000/hook".into()),
        "EMPTY" => Some(String::new()),
        "HERALD_TOKEN" => Some("t0ken".into()),
        "HERALD_WEBHOOK_URL" => Some("https://hooks.example.com/T0K3N".into()),
        _ => None,
    }
}

fn parse_ok(text: &str) -> Config {
    match parse_with(text, "/etc/herald/herald.toml", &env) {
        Ok(c) => c,
        Err(e) => panic!("{text}\n-> {e}"),
    }
}

fn parse_err(text: &str) -> String {
    match parse_with(text, "/etc/herald/herald.toml", &env) {
        Ok(c) => panic!("{text}\n-> accepted: {c:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn defaults() {
    let c = parse_ok("");
    assert_eq!(c.daemon.listen, "127.0.0.1:7878".parse().expect("valid address"));
    assert_eq!(c.daemon.socket, Some(PathBuf::from("/run/user/1000/herald.sock")));
    assert_eq!(c.daemon.state_dir, PathBuf::from("/home/ada/.local/state/herald"));
    assert_eq!(c.daemon.stall_after, Duration::from_secs(900));
    assert_eq!(c.daemon.drain_timeout, Duration::from_secs(30));
    assert_eq!((c.daemon.token.is_none(), c.daemon.public_url.is_none()), (true, true));
    assert_eq!(c.daemon.dashboard, None, "the dashboard is off unless asked for");
    assert!(c.notifiers.is_empty());
    let builtin =
        parse_with(&default_config_for(false), BUILT_IN, &env).expect("the built-in default parses");
    assert_eq!(builtin.origin, BUILT_IN);
    assert_eq!(builtin.notifiers.len(), 1);
    let n = &builtin.notifiers[0];
    assert_eq!((n.name.as_str(), n.kind.as_str()), ("console", "console"));
    assert_eq!(n.routing, Routing::default());
    assert!(n.table.is_empty());
    let registry = crate::builtins::registry();
    builtin.build_notifiers(&registry).expect("the built-in default builds");
    assert!(Config::defaults().is_ok());
    // With a session bus, the desktop joins, with a short max_age.
    let with_bus = parse_with(&default_config_for(true), BUILT_IN, &env).expect("the desktop default parses");
    let kinds: Vec<&str> = with_bus.notifiers.iter().map(|n| n.kind.as_str()).collect();
    assert_eq!(kinds, ["console", "desktop"]);
    assert_eq!(with_bus.notifiers[1].routing.max_age, Duration::from_secs(600));
    with_bus.build_notifiers(&registry).expect("the desktop default builds");
    assert_eq!(parse_with(&default_config_for(false), BUILT_IN, &env).expect("parses").notifiers.len(), 1);
}

#[test]
fn beside_a_trainers_output_the_built_in_console_writes_lines() {
    let registry = crate::builtins::registry();
    for bus in [false, true] {
        let text = crate::builtins::default_config_beside_output_for(bus);
        let c = parse_with(&text, BUILT_IN, &env).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let kinds: Vec<&str> = c.notifiers.iter().map(|n| n.kind.as_str()).collect();
        assert_eq!(kinds, if bus { vec!["console", "desktop"] } else { vec!["console"] });
        assert_eq!(c.notifiers[0].table.get("format").and_then(Value::as_str), Some("lines"));
        c.build_notifiers(&registry).expect("the trainer's built-in default builds");
        let own = parse_with(&default_config_for(bus), BUILT_IN, &env).expect("the built-in default parses");
        assert_eq!(own.notifiers[0].table.get("format"), None, "herald serve's console writes blocks");
    }
}

#[test]
fn the_dashboard_listens_where_configured_and_localhost_means_loopback() {
    let c = parse_ok("[daemon]\ndashboard = \"localhost:7879\"\n");
    assert_eq!(c.daemon.dashboard, Some("127.0.0.1:7879".parse().expect("valid address")));
    assert_eq!(parse_ok("").daemon.dashboard, None);
}

#[test]
fn full_daemon_and_routing() {
    let c = parse_ok(
        r#"
[daemon]
listen = "0.0.0.0:9999"
socket = ""
token = "${HERALD_TOKEN}"
state_dir = "~/herald-state"
stall_after = "5m"
drain_timeout = "10s"
public_url = "https://herald.example.com/"

[[notifier]]
name = "hook"
type = "webhook"
url = "${HOOK_URL}"
headers = { X-Run = "${UNSET:-none}" }
events = ["run_started", "epoch_ended", "run_finished"]
every_n_epochs = 5
min_interval = "1m"
only_on_improvement = "valid_loss"
rate_per_s = 2
burst = 3
timeout = "5s"
max_age = "1h"
"#,
    );
    let d = &c.daemon;
    assert_eq!(d.listen, "0.0.0.0:9999".parse().expect("valid address"));
    assert_eq!(d.socket, None);
    assert_eq!(d.token.as_ref().map(Secret::expose), Some("t0ken"));
    assert_eq!(d.state_dir, PathBuf::from("/home/ada/herald-state"));
    assert_eq!((d.stall_after, d.drain_timeout), (Duration::from_secs(300), Duration::from_secs(10)));
    assert_eq!(d.public_url.as_deref(), Some("https://herald.example.com"));
    let n = &c.notifiers[0];
    assert_eq!((n.name.as_str(), n.kind.as_str()), ("hook", "webhook"));
    let r = &n.routing;
    assert_eq!(r.events, [EventKind::RunStarted, EventKind::EpochEnded, EventKind::RunFinished]);
    assert_eq!((r.every_n_epochs, r.min_interval), (5, Duration::from_secs(60)));
    assert_eq!(r.only_on_improvement.as_deref(), Some("valid_loss"));
    assert_eq!((r.rate_per_s, r.burst), (Some(2.0), Some(3)));
    assert_eq!((r.timeout, r.max_age), (Duration::from_secs(5), Duration::from_secs(3600)));
    assert_eq!(n.table.get("url").and_then(Value::as_str), Some("http://127.0.0.1:9000/hook"));
    assert_eq!(n.table["headers"]["X-Run"].as_str(), Some("none"));
    assert_eq!(n.table.len(), 2, "routing keys are not passed on");
    assert_eq!(n.span, Some((11, 1)));
    assert_eq!(n.keys.positions.get("headers.X-Run"), Some(&(15, 13)));
    assert!(!format!("{c:?}").contains("t0ken"), "Debug hides secrets");
    assert!(!format!("{c:?}").contains("9000/hook"), "Debug hides notifier values");
}

#[test]
fn errors_name_file_line_column_and_key() {
    fn check(text: &str, expected: &str) {
        let err = parse_err(text);
        assert!(err.starts_with(expected), "{text}\n-> {err}\nexpected: {expected}");
    }
    let f = "/etc/herald/herald.toml";
    // A bad key.
    check(
        "[daemon]\nlisten = \"127.0.0.1:1\"\nlisen = 1\n",
        &format!("{f}:3:1: daemon.lisen: unknown key; expected one of `listen`"),
    );
    check("[deamon]\n", &format!("{f}:1:2: deamon: unknown section"));
    // A bad type.
    check(
        "[daemon]\nstall_after = 15\n",
        &format!("{f}:2:15: daemon.stall_after: expected a string, found integer"),
    );
    check(
        "[[notifier]]\ntype = \"console\"\nevery_n_epochs = \"2\"\n",
        &format!("{f}:3:18: notifier[0].every_n_epochs: expected an integer, found string"),
    );
    check(
        "[[notifier]]\ntype = \"console\"\nevery_n_epochs = 0\n",
        &format!("{f}:3:18: notifier[0].every_n_epochs: must be an integer from 1"),
    );
    check(
        "[[notifier]]\ntype = \"console\"\nrate_per_s = -1.0\n",
        &format!("{f}:3:14: notifier[0].rate_per_s: must be a number above zero"),
    );
    check("[notifier]\ntype = \"console\"\n", &format!("{f}:1:1: notifier: expected an array of tables"));
    // An unknown event name.
    check(
        "[[notifier]]\ntype = \"console\"\nevents = [\"run_started\", \"run_ended\"]\n",
        &format!("{f}:3:26: notifier[0].events: unknown event type `run_ended`; expected one of run_started"),
    );
    check(
        "[[notifier]]\ntype = \"console\"\nevents = []\n",
        &format!("{f}:3:10: notifier[0].events: lists no event"),
    );
    // A bad duration.
    check(
        "[daemon]\nstall_after = \"15 minutes\"\n",
        &format!("{f}:2:15: daemon.stall_after: invalid duration `15 minutes`: unknown unit `minutes`"),
    );
    check(
        "[[notifier]]\ntype = \"console\"\ntimeout = \"0s\"\n",
        &format!("{f}:3:11: notifier[0].timeout: must be more than zero"),
    );
    // Other values.
    check(
        "[daemon]\nlisten = \"localhost\"\n",
        &format!("{f}:2:10: daemon.listen: `localhost` is not an address and port"),
    );
    check(
        "[daemon]\ndashboard = \"7879\"\n",
        &format!("{f}:2:13: daemon.dashboard: `7879` is not an address and port"),
    );
    check(
        "[daemon]\npublic_url = \"herald.example.com\"\n",
        &format!("{f}:2:14: daemon.public_url: must start with"),
    );
    check("[[notifier]]\nname = \"x\"\n", &format!("{f}:1:1: notifier[0].type: missing key `type`"));
    check(
        "[[notifier]]\ntype = \"console\"\nname = \"my hook\"\n",
        &format!("{f}:3:8: notifier[0].name: `my hook` is not a valid name"),
    );
    check(
        "[[notifier]]\ntype = \"console\"\n\n[[notifier]]\ntype = \"console\"\n",
        &format!("{f}:4:1: notifier[1].name: the name `console` is already used by the notifier at line 1"),
    );
    check(
        "[[notifier]]\nname = \"a\"\ntype = \"console\"\n[[notifier]]\nname = \"a\"\ntype = \"webhook\"\n",
        &format!("{f}:5:1: notifier[1].name: the name `a` is already used"),
    );
    // TOML syntax, with a position.
    check("[daemon\n", &format!("{f}:1:"));
    check("[daemon]\nlisten = \n", &format!("{f}:2:"));
    // Interpolation.
    check(
        "[daemon]\ntoken = \"${NOPE}\"\n",
        &format!("{f}:2:9: daemon.token: environment variable `NOPE` is not set"),
    );
    check("[daemon]\ntoken = \"${NOPE\"\n", &format!("{f}:2:9: daemon.token: `${{` without a closing"));
    check(
        "[[notifier]]\ntype = \"webhook\"\nurl = \"${1X}\"\n",
        &format!("{f}:3:7: notifier[0].url: `${{1X}}` does not name"),
    );
}

#[test]
fn column_counts_characters() {
    let err = parse_err("[daemon]\nstall_after = \"λλ\" # ünïcode\nxx = 1\n");
    assert!(err.contains(":2:15:"), "{err}");
    let err = parse_err("[daemon] # ☃☃☃\nlisten = \"127.0.0.1:1\"\n   bad = 1");
    assert!(err.contains(":3:4: daemon.bad"), "{err}");
}

#[test]
fn interpolation() {
    fn check(input: &str, expected: Result<&str, &str>) {
        let got = interpolate(input, &env);
        match expected {
            Ok(s) => assert_eq!(got.as_deref(), Ok(s), "{input}"),
            Err(part) => {
                let err = got.expect_err(input);
                assert!(err.contains(part), "{input}: {err}");
            }
        }
    }
    check("plain", Ok("plain"));
    check("${HOME}/x", Ok("/home/ada/x"));
    check("a${HERALD_TOKEN}b${HERALD_TOKEN}", Ok("at0kenbt0ken"));
    check("${UNSET:-fallback}", Ok("fallback"));
    check("${UNSET:-}", Ok(""));
    check("${EMPTY:-used when empty}", Ok("used when empty"));
    check("${EMPTY}", Ok(""));
    check("${HOME:-ignored}", Ok("/home/ada"));
    check("${UNSET:-a:-b}", Ok("a:-b"));
    check("cost $5 and $$", Ok("cost $5 and $$"));
    check("$${HOME}", Ok("${HOME}"));
    check("$", Ok("$"));
    check("${UNSET}", Err("environment variable `UNSET` is not set"));
    check("${}", Err("does not name"));
    check("${A-B}", Err("does not name"));
    check("${HOME", Err("without a closing"));
}

#[test]
fn file_keys_read_secrets() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    std::fs::write(dir.path().join("token"), "s3cret-${HOME}\n").expect("write the token file");
    std::fs::write(dir.path().join("hook"), "http://127.0.0.1:1/hook\r\n").expect("write the url file");
    let origin = dir.path().join("herald.toml");
    let origin = origin.to_str().expect("UTF-8 temp path");
    let text =
        "[daemon]\ntoken_file = \"token\"\n\n[[notifier]]\ntype = \"webhook\"\nurl_file = \"${DIR}/hook\"\n";
    let dir_s = dir.path().to_str().expect("UTF-8 temp path").to_owned();
    let env2 = move |name: &str| if name == "DIR" { Some(dir_s.clone()) } else { env(name) };
    let c = parse_with(text, origin, &env2).expect("the secret files are read");
    assert_eq!(
        c.daemon.token.as_ref().map(Secret::expose),
        Some("s3cret-${HOME}"),
        "no interpolation inside"
    );
    assert_eq!(c.notifiers[0].table["url"].as_str(), Some("http://127.0.0.1:1/hook"));
    assert_eq!(c.notifiers[0].keys.positions.get("url"), Some(&(6, 1)));
    c.build_notifiers(&crate::builtins::registry()).expect("the webhook builds from url_file");

    let err = parse_with("[daemon]\ntoken_file = \"missing\"\n", origin, &env2).expect_err("missing file");
    let shown = err.to_string();
    assert!(shown.starts_with(&format!("{origin}:2:14: daemon.token_file: cannot read `")), "{shown}");
    let err =
        parse_with("[daemon]\ntoken = \"a\"\ntoken_file = \"token\"\n", origin, &env2).expect_err("both");
    assert!(
        err.to_string().contains("daemon.token_file: set either `token` or `token_file`, not both"),
        "{err}"
    );
}

#[test]
fn notifier_errors_point_at_the_key() {
    let registry = crate::builtins::registry();
    fn build_err(registry: &Registry, text: &str) -> String {
        let c = parse_with(text, "h.toml", &env).expect("the daemon-level keys are valid");
        match c.build_notifiers(registry) {
            Ok(_) => panic!("{text}: built"),
            Err(e) => e.to_string(),
        }
    }
    let err = build_err(&registry, "[[notifier]]\ntype = \"webhook\"\nurl = \"http://h/\"\n  urll = \"x\"\n");
    assert!(err.starts_with("h.toml:4:3: notifier[0].urll: unknown key; expected one of `url`"), "{err}");
    let err = build_err(
        &registry,
        "[[notifier]]\ntype = \"webhook\"\nurl = \"http://h/\"\nheaders = { \"a b\" = \"x\" }\n",
    );
    assert!(err.starts_with("h.toml:4:13: notifier[0].headers.a b: not a valid HTTP header name"), "{err}");
    let err = build_err(&registry, "[[notifier]]\nname = \"x\"\ntype = \"carrier-pigeon\"\n");
    assert!(err.starts_with("h.toml:3:8: notifier[0].type: unknown notifier type `carrier-pigeon`"), "{err}");
    let err = build_err(&registry, "\n[[notifier]]\ntype = \"webhook\"\n");
    assert!(err.starts_with("h.toml:2:1: notifier[0].url: missing required key"), "{err}");
    let err = build_err(&registry, "[[notifier]]\ntype = \"console\"\nevent = [\"message\"]\n");
    assert_eq!(
        err,
        "h.toml:3:1: notifier[0].event: unknown key; expected `format` (or a routing key: `events`, \
         `every_n_epochs`, `min_interval`, `only_on_improvement`, `rate_per_s`, `burst`, `timeout`, `max_age`, \
         `quiet_hours`, `timezone`, `digest`)"
    );
    let err = build_err(&registry, "[[notifier]]\ntype = \"console\"\nformat = \"xml\"\n");
    assert!(err.starts_with("h.toml:3:1: notifier[0].format: unknown variant `xml`"), "{err}");
}

#[test]
fn load_order() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let explicit = dir.path().join("explicit.toml");
    std::fs::write(&explicit, "[[notifier]]\nname = \"explicit\"\ntype = \"console\"\n").expect("write");
    let from_env = dir.path().join("env.toml");
    std::fs::write(&from_env, "[[notifier]]\nname = \"env\"\ntype = \"console\"\n").expect("write");
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join(".config/herald")).expect("mkdir");
    std::fs::write(
        home.join(".config/herald/herald.toml"),
        "[[notifier]]\nname = \"home\"\ntype = \"console\"\n",
    )
    .expect("write");
    let (from_env_s, home_s) = (from_env.display().to_string(), home.display().to_string());
    let with = |herald_config: bool, home_dir: bool| {
        let (e, h) = (from_env_s.clone(), home_s.clone());
        move |name: &str| match name {
            "HERALD_CONFIG" if herald_config => Some(e.clone()),
            "HOME" if home_dir => Some(h.clone()),
            _ => None,
        }
    };
    let name = |c: Config| c.notifiers[0].name.clone();
    let c = load_with(Some(&explicit), &with(true, true)).expect("explicit");
    assert_eq!((name(c.clone()), c.origin), ("explicit".to_owned(), explicit.display().to_string()));
    assert_eq!(name(load_with(None, &with(true, true)).expect("env")), "env");
    assert_eq!(name(load_with(None, &with(false, true)).expect("home")), "home");
    let c = load_with(None, &with(false, false));
    // No HOME: the built-in default cannot pick a state_dir.
    assert!(c.is_err_and(|e| e.to_string().contains("set `state_dir`")));
    let empty_home = dir.path().join("empty");
    let e = empty_home.display().to_string();
    let c = load_with(None, &move |n: &str| (n == "HOME").then(|| e.clone())).expect("defaults");
    assert_eq!((c.origin.as_str(), name(c.clone()).as_str()), (BUILT_IN, "console"));
    let err = load_with(Some(&dir.path().join("nope.toml")), &with(false, true)).expect_err("missing");
    assert!(err.to_string().contains("nope.toml: cannot read the configuration"), "{err}");
}

#[test]
fn the_example_uses_every_key() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/herald.toml");
    let text = std::fs::read_to_string(&path).expect("config/herald.toml exists");
    let raw: toml::Table = text.parse().expect("config/herald.toml is TOML");
    let daemon = raw["daemon"].as_table().expect("a [daemon] table");
    for key in DAEMON_KEYS.iter().filter(|k| !k.ends_with("_file")) {
        assert!(daemon.contains_key(*key), "[daemon] lacks `{key}`");
    }
    let notifiers = raw["notifier"].as_array().expect("[[notifier]] tables");
    let keys_of = |kind: &str| -> Vec<String> {
        notifiers
            .iter()
            .filter_map(|n| n.as_table())
            .filter(|n| n.get("type").and_then(Value::as_str) == Some(kind))
            .flat_map(|n| n.keys().cloned())
            .collect()
    };
    let all: Vec<String> = ["console", "webhook"].iter().flat_map(|k| keys_of(k)).collect();
    for key in ROUTING_KEYS.iter().chain(&["name", "type"]) {
        assert!(all.iter().any(|k| k == key), "no [[notifier]] sets `{key}`");
    }
    for (kind, keys) in
        [("console", &["format"][..]), ("webhook", &["url", "headers", "secret", "request_timeout"][..])]
    {
        let set = keys_of(kind);
        for key in keys {
            assert!(set.iter().any(|k| k == key), "the {kind} example lacks `{key}`");
        }
    }
    // Every documented key is in docs/configuration.md too.
    let docs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md"))
            .expect("docs/configuration.md exists");
    for key in DAEMON_KEYS.iter().chain(&ROUTING_KEYS).chain(&[
        "format",
        "url",
        "headers",
        "secret",
        "request_timeout",
    ]) {
        assert!(docs.contains(&format!("`{key}`")), "docs/configuration.md does not mention `{key}`");
    }
}

#[test]
fn toml_examples_in_the_docs_parse_and_build() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
    let registry = crate::builtins::registry();
    let mut seen = 0;
    for file in ["configuration.md", "notifiers/console.md", "notifiers/webhook.md"] {
        let text = std::fs::read_to_string(docs.join(file)).expect("the document exists");
        for block in text.split("```toml\n").skip(1) {
            let example = block.split("```").next().expect("split yields at least one piece");
            let secret = tempfile::NamedTempFile::new().expect("a temporary file");
            let example =
                example.replace("/run/secrets/herald-hook-secret", &secret.path().display().to_string());
            let config =
                parse_with(&example, file, &env).unwrap_or_else(|e| panic!("{file}: {e}\n{example}"));
            config.build_notifiers(&registry).unwrap_or_else(|e| panic!("{file}: {e}\n{example}"));
            seen += 1;
        }
    }
    assert!(seen >= 3, "found {seen} examples");
}

#[test]
fn every_file_in_config_parses_and_builds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
    let registry = crate::builtins::registry();
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("the config/ folder exists") {
        let path = entry.expect("a readable folder entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("a readable example");
        let config = parse_with(&text, &path.display().to_string(), &env).unwrap_or_else(|e| panic!("{e}"));
        config.build_notifiers(&registry).unwrap_or_else(|e| panic!("{e}"));
        seen += 1;
    }
    assert!(seen >= 1, "no .toml file in {}", dir.display());
}

/// What serde would get wrong without the pre-pass's care: a datetime is not a string, an unset variable
/// is reported as such (not as a bad duration), and a missing `type` comes after the other keys' errors.
#[test]
fn values_serde_cannot_tell_apart() {
    let f = "/etc/herald/herald.toml";
    for (text, expected) in [
        ("[daemon]\ntoken = 1979-05-27\n", "2:9: daemon.token: expected a string, found datetime"),
        (
            "[[notifier]]\ntype = \"console\"\nevents = [\"message\", 1979-05-27]\n",
            "3:22: notifier[0].events: expected a string, found datetime",
        ),
        (
            "[daemon]\nstall_after = \"${NOPE}\"\n",
            "2:15: daemon.stall_after: environment variable `NOPE` is not set",
        ),
        ("[daemon]\nlisen = \"${NOPE}\"\n", "2:1: daemon.lisen: unknown key"),
        (
            "[[notifier]]\ntype = \"console\"\nevery_n_epochs = \"${NOPE}\"\n",
            "3:18: notifier[0].every_n_epochs: expected an integer, found string",
        ),
        ("[[notifier]]\nburst = 0\n", "2:9: notifier[0].burst: must be an integer from 1 to 1000000"),
        ("[[notifier]]\nurl = \"${NOPE}\"\n", "2:7: notifier[0].url: environment variable `NOPE` is not set"),
    ] {
        let err = parse_err(text);
        assert!(err.starts_with(&format!("{f}:{expected}")), "{text}\n-> {err}\nexpected: {expected}");
    }
}

#[test]
fn slow_rank_factor_defaults_to_one_and_a_half_and_must_be_more_than_one() {
    assert_eq!(parse_ok("").daemon.slow_rank_factor, 1.5);
    assert_eq!(parse_ok("[daemon]\nslow_rank_factor = 2\n").daemon.slow_rank_factor, 2.0);
    assert_eq!(parse_ok("[daemon]\nslow_rank_factor = 1.25\n").daemon.slow_rank_factor, 1.25);
    let f = "/etc/herald/herald.toml";
    for (text, expected) in [
        (
            "[daemon]\nslow_rank_factor = 1\n",
            format!("{f}:2:20: daemon.slow_rank_factor: must be a number more than 1"),
        ),
        (
            "[daemon]\nslow_rank_factor = \"2\"\n",
            format!("{f}:2:20: daemon.slow_rank_factor: expected a number, found string"),
        ),
    ] {
        let err = parse_err(text);
        assert!(err.starts_with(&expected), "{text}\n-> {err}\nexpected: {expected}");
    }
}
