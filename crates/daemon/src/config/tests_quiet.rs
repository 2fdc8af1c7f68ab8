//! Tests of a notifier's `quiet_hours`, `timezone` and `digest` keys: what they parse to, and errors that
//! name the file, line, column and key.

use std::time::Duration;

use super::*;

fn parse(text: &str) -> Result<Config, String> {
    let env = |name: &str| (name == "HOME").then(|| "/home/ada".to_owned());
    parse_with(text, "/etc/herald/herald.toml", &env).map_err(|e| e.to_string())
}

#[test]
fn quiet_keys_parse_into_the_routing() {
    let c = parse(
        "[[notifier]]\ntype = \"console\"\nquiet_hours = \"22:30-07:00\"\ntimezone = \"Europe/Berlin\"\n\
         digest = \"1h\"\n",
    )
    .expect("valid");
    let q = c.notifiers[0].routing.quiet.as_ref().expect("quiet hours set");
    assert_eq!(q.hours.map(|w| w.to_string()).as_deref(), Some("22:30-07:00"));
    assert_eq!(q.digest, Some(Duration::from_secs(3600)));
    assert_eq!(q.zone_name, "Europe/Berlin");
    // Only a digest; the machine's zone.
    let c = parse("[[notifier]]\ntype = \"console\"\ndigest = \"30m\"\n").expect("valid");
    let q = c.notifiers[0].routing.quiet.as_ref().expect("digest set");
    assert_eq!((q.hours, q.digest), (None, Some(Duration::from_secs(1800))));
    // Neither: nothing waits.
    let c = parse("[[notifier]]\ntype = \"console\"\n").expect("valid");
    assert_eq!(c.notifiers[0].routing.quiet, None);
}

#[test]
fn quiet_key_errors_name_file_line_column_and_key() {
    fn check(keys: &str, expected: &str) {
        let text = format!("[[notifier]]\ntype = \"console\"\n{keys}\n");
        let err = parse(&text).expect_err(&text);
        let expected = format!("/etc/herald/herald.toml:{expected}");
        assert!(err.starts_with(&expected), "{text}\n-> {err}\nexpected: {expected}");
    }
    check(
        "quiet_hours = \"22:30\"",
        "3:15: notifier[0].quiet_hours: `22:30` is not a window of two times of day",
    );
    check("quiet_hours = \"25:00-07:00\"", "3:15: notifier[0].quiet_hours: `25:00-07:00` is not a window");
    check("quiet_hours = \"07:00-07:00\"", "3:15: notifier[0].quiet_hours: `07:00-07:00` starts and ends");
    check("quiet_hours = 2230", "3:15: notifier[0].quiet_hours: expected a string, found integer");
    check(
        "quiet_hours = \"22:00-06:00\"\ntimezone = \"Europe/Atlantis\"",
        "4:12: notifier[0].timezone: `Europe/Atlantis` is not a time zone this machine knows",
    );
    check(
        "timezone = \"Europe/Berlin\"",
        "3:12: notifier[0].timezone: `timezone` is the zone of `quiet_hours`",
    );
    check("digest = \"10s\"", "3:10: notifier[0].digest: a digest period is at least `1m`");
    check("digest = \"2d\"", "3:10: notifier[0].digest: a digest period is at most `24h`");
    check("digest = \"soon\"", "3:10: notifier[0].digest: ");
}
