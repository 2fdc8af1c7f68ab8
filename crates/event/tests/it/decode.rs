//! The decoder's typed errors, table-driven.

use herald_event::{DecodeError, EventKind, Payload, decode_batch, decode_event};

const STARTED: &str = r#"{"v":1,"run":"r1","seq":0,"time":"2026-11-27T09:46:06Z","type":"run_started","name":"n","host":"h","pid":1,"n_epochs":2,"batches_per_epoch":3,"metric_names":["accuracy"]}"#;
const EPOCH: &str = r#"{"v":1,"run":"r1","seq":1,"time":"2026-11-27T09:46:07Z","type":"epoch_ended","epoch":0,"n_epochs":2,"train_loss":0.5,"metrics":{"b":1,"a":0.5},"elapsed_s":1}"#;

fn check(input: &str, expected: &str) {
    match decode_event(input.as_bytes()) {
        Ok(e) => panic!("{input} decoded as {e:?}, expected error {expected}"),
        Err(e) => assert_eq!(e.to_string(), expected, "{input}"),
    }
}

#[test]
fn typed_errors() {
    check("", "body holds no event");
    check("[1]", "an event must be a JSON object, found an array");
    check("42", "an event must be a JSON object, found a number");
    check(r#"{"run":"r"}"#, "missing field `v`");
    check(
        r#"{"v":"1","type":"heartbeat"}"#,
        "invalid `envelope` event: `v` must be a non-negative integer, found \"1\"",
    );
    check(
        r#"{"v":2,"run":"r","seq":0,"time":"2026-11-27T09:46:06Z","type":"heartbeat"}"#,
        "protocol version 2 is newer than 1, the newest this build reads: upgrade herald",
    );
    check(
        r#"{"v":0,"run":"r","seq":0,"time":"2026-11-27T09:46:06Z","type":"heartbeat"}"#,
        "invalid `envelope` event: `v` must be between 1 and 1, found 0",
    );
    check(r#"{"v":1,"run":"r","seq":0,"time":"2026-11-27T09:46:06Z"}"#, "missing field `type`");
    check(
        r#"{"v":1,"run":"r","seq":0,"time":"2026-11-27T09:46:06Z","type":"lunch"}"#,
        "unknown event type `lunch`",
    );
    check(r#"{"v":1,"seq":0,"time":"2026-11-27T09:46:06Z","type":"heartbeat"}"#, "missing field `run`");
    check(
        r#"{"v":1,"run":"r","seq":0,"time":"2026-11-27T09:46:06Z","type":"epoch_started"}"#,
        "missing field `epoch`",
    );
    let e = decode_event(
        br#"{"v":1,"run":"r","seq":0,"time":"2026-11-27T09:46:06Z","type":"epoch_started","epoch":"zero"}"#,
    )
    .expect_err("a string epoch is refused");
    assert!(matches!(&e, DecodeError::Invalid { kind, .. } if kind == "epoch_started"), "{e}");
    let e = decode_event(br#"{"v":1,"run":"r","seq":0,"time":"yesterday","type":"heartbeat"}"#)
        .expect_err("a bad time is refused");
    assert!(matches!(e, DecodeError::Invalid { .. }), "{e}");
    // lr must be finite; losses may be "NaN".
    let e = decode_event(
        br#"{"v":1,"run":"r","seq":0,"time":"2026-11-27T09:46:06Z","type":"batch_ended","epoch":0,"batch":0,"n_batches":1,"loss":"NaN","smooth_loss":1,"lr":"NaN"}"#,
    )
    .expect_err("a NaN lr is refused");
    assert!(e.to_string().starts_with("invalid `batch_ended` event: `lr`: "), "{e}");
    let ok = decode_event(
        br#"{"v":1,"run":"r","seq":0,"time":"2026-11-27T09:46:06Z","type":"batch_ended","epoch":0,"batch":0,"n_batches":1,"loss":"NaN","smooth_loss":"Infinity","lr":0.1}"#,
    )
    .expect("NaN losses are allowed");
    let Payload::BatchEnded(b) = ok.payload else { panic!("decoded as {:?}", ok.payload) };
    assert!(b.loss.is_nan() && b.smooth_loss == f64::INFINITY);
    assert!(matches!(decode_event(b"{\"v\":1,\xff}"), Err(DecodeError::InvalidUtf8 { offset: 7 })));
    check("{\"v\":1,", "malformed JSON: EOF while parsing an object at line 1 column 7");
}

#[test]
fn unknown_fields_are_ignored_and_defaults_apply() {
    let text = STARTED.replace("\"v\":1,", "\"v\":1,\"future\":{\"x\":[1,2]},");
    let event = decode_event(text.as_bytes()).expect("unknown fields are ignored");
    let Payload::RunStarted(s) = event.payload else { panic!("not run_started") };
    assert_eq!(s.rank, 0);
    assert!(s.hyper.is_empty());
}

#[test]
fn metrics_keep_their_order() {
    let event = decode_event(EPOCH.as_bytes()).expect("valid");
    let Payload::EpochEnded(e) = &event.payload else { panic!("not epoch_ended") };
    let names: Vec<&str> = e.metrics.iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["b", "a"]);
    assert_eq!(e.valid_loss, None);
    let text = herald_event::encode_event(&event).expect("encodes");
    assert!(text.contains(r#""metrics":{"b":1.0,"a":0.5}"#), "{text}");
}

#[test]
fn batches_as_array_ndjson_and_single_objects() {
    let array = format!("[{STARTED},{EPOCH}]");
    let ndjson = format!("{STARTED}\n{EPOCH}\n");
    let pretty =
        serde_json::to_string_pretty(&serde_json::from_str::<serde_json::Value>(STARTED).expect("json"))
            .expect("json");
    for (body, n) in [(array.as_str(), 2), (ndjson.as_str(), 2), (pretty.as_str(), 1), (STARTED, 1)] {
        let events = decode_batch(body.as_bytes()).unwrap_or_else(|e| panic!("{e}: {body}"));
        assert_eq!(events.len(), n);
        assert_eq!(events[0].kind(), EventKind::RunStarted);
    }
    for body in ["", "  \n", "[]"] {
        assert_eq!(decode_batch(body.as_bytes()), Err(DecodeError::Empty), "{body:?}");
    }
}

#[test]
fn a_batch_error_names_the_index_of_the_bad_element() {
    let bad = r#"{"v":1,"run":"r1","seq":2,"time":"2026-11-27T09:46:06Z","type":"nope"}"#;
    for body in [format!("[{STARTED},{EPOCH},{bad}]"), format!("{STARTED}\n{EPOCH}\n{bad}\n")] {
        let e = decode_batch(body.as_bytes()).expect_err("one bad element rejects the batch");
        assert_eq!(e.index(), Some(2), "{e}");
        assert_eq!(e.to_string(), "event 2: unknown event type `nope`");
    }
    let e = decode_batch(format!("{STARTED}\n{{\"v\":1,").as_bytes()).expect_err("truncated");
    assert_eq!(e.index(), Some(1), "{e}");
}

#[test]
fn alerts_default_their_level_and_name_bad_fields() {
    let ok = decode_event(
        br#"{"v":1,"run":"r","seq":0,"time":"2026-11-27T09:46:06Z","type":"alert","title":"t","text":"x"}"#,
    )
    .expect("rule, level and epoch are optional");
    let Payload::Alert(a) = &ok.payload else { panic!("decoded as {:?}", ok.payload) };
    assert_eq!((a.rule.as_deref(), a.level, a.epoch), (None, herald_event::Level::Warning, None));
    check(
        r#"{"v":1,"run":"r","seq":0,"time":"2026-11-27T09:46:06Z","type":"alert","text":"x"}"#,
        "missing field `title`",
    );
    let e = decode_event(
        br#"{"v":1,"run":"r","seq":0,"time":"2026-11-27T09:46:06Z","type":"alert","title":"t","text":"x","level":"panic"}"#,
    )
    .expect_err("an unknown level is refused");
    assert!(e.to_string().starts_with("invalid `alert` event: `level`: "), "{e}");
    let e = decode_event(
        br#"{"v":1,"run":"r","seq":0,"time":"2026-11-27T09:46:06Z","type":"alert","title":"t","text":"x","epoch":-1}"#,
    )
    .expect_err("a negative epoch is refused");
    assert!(e.to_string().starts_with("invalid `alert` event: `epoch`: "), "{e}");
}

#[test]
fn run_started_without_job_decodes_as_before_and_with_job_round_trips() {
    // An old sender: no `job`, no `world_size`; and nothing new is written for it.
    let old = decode_event(STARTED.as_bytes()).expect("an old run_started decodes");
    let Payload::RunStarted(s) = &old.payload else { panic!("decoded as {:?}", old.payload) };
    assert_eq!((s.rank, s.job.as_deref(), s.world_size), (0, None, None));
    let encoded = herald_event::encode_event(&old).expect("encodes");
    assert!(!encoded.contains("job") && !encoded.contains("world_size"), "{encoded}");

    let with_job = STARTED.replace(r#""pid":1,"#, r#""pid":1,"rank":2,"job":"j-7","world_size":3,"#);
    let e = decode_event(with_job.as_bytes()).expect("a rank of a job decodes");
    let Payload::RunStarted(s) = &e.payload else { panic!("decoded as {:?}", e.payload) };
    assert_eq!((s.rank, s.job.as_deref(), s.world_size), (2, Some("j-7"), Some(3)));
    let again = decode_event(herald_event::encode_event(&e).expect("encodes").as_bytes()).expect("decodes");
    assert_eq!(again, e);

    let e = decode_event(STARTED.replace(r#""pid":1,"#, r#""pid":1,"job":7,"#).as_bytes())
        .expect_err("a job id that is not a string is refused");
    assert!(
        e.to_string().starts_with("invalid `run_started` event: `job`: invalid type: integer `7`"),
        "{e}"
    );
    let e = decode_event(STARTED.replace(r#""pid":1,"#, r#""pid":1,"world_size":-1,"#).as_bytes())
        .expect_err("a negative world size is refused");
    assert!(e.to_string().starts_with("invalid `run_started` event: `world_size`: "), "{e}");
}

#[test]
fn job_events_name_their_bad_fields() {
    const T: &str = r#""v":1,"run":"r","seq":0,"time":"2026-11-27T09:46:06Z""#;
    check(
        &format!(r#"{{{T},"type":"rank_lost","rank":1,"host":"h","pid":2,"reason":"x"}}"#),
        "missing field `job`",
    );
    check(&format!(r#"{{{T},"type":"rank_stalled","job":"j","stall_after_s":9}}"#), "missing field `ranks`");
    let e = decode_event(
        format!(
            r#"{{{T},"type":"rank_stalled","job":"j","ranks":[{{"rank":1,"host":"h","silent_s":3,"last":"lunch"}}],"stall_after_s":9}}"#
        )
        .as_bytes(),
    )
    .expect_err("an unknown last event type is refused");
    assert!(e.to_string().starts_with("invalid `rank_stalled` event: `ranks[0].last`: "), "{e}");
    let e = decode_event(
        format!(
            r#"{{{T},"type":"rank_slow","job":"j","rank":1,"host":"h","epoch":1,"elapsed_s":"NaN","median_s":1,"factor":1.5}}"#
        )
        .as_bytes(),
    )
    .expect_err("a non-finite epoch time is refused");
    assert!(e.to_string().starts_with("invalid `rank_slow` event: `elapsed_s`: "), "{e}");
    let ok = decode_event(
        format!(r#"{{{T},"type":"rank_failed","job":"j","rank":3,"host":"h","error":"oom"}}"#).as_bytes(),
    )
    .expect("a traceback is optional");
    assert_eq!(ok.payload.job(), Some("j"));
    let ok = decode_event(
        format!(r#"{{{T},"type":"ranks_missing","job":"j","world_size":4,"seen":[0],"missing":[1,2,3],"after_s":60}}"#)
            .as_bytes(),
    )
    .expect("ranks_missing decodes");
    assert_eq!(ok.kind(), EventKind::RanksMissing);
}
