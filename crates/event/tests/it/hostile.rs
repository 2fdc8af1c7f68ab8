//! Hostile inputs: the decoder returns errors and never panics (bounded property tests, run in every test run).

use herald_event::{decode_batch, decode_event};
use proptest::prelude::*;

const VALID: &str = r#"{"v":1,"run":"r1","seq":1,"time":"2026-11-27T09:46:07Z","type":"epoch_ended","epoch":0,"n_epochs":2,"train_loss":0.5,"valid_loss":0.4,"metrics":{"accuracy":0.9},"elapsed_s":1}"#;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_event(&bytes);
        let _ = decode_batch(&bytes);
    }

    #[test]
    fn every_truncation_of_a_valid_event_is_an_error(cut in 0..VALID.len()) {
        prop_assert!(decode_event(&VALID.as_bytes()[..cut]).is_err());
        prop_assert!(decode_batch(&VALID.as_bytes()[..cut]).is_err());
    }

    #[test]
    fn mutated_valid_events_never_panic(pos in 0..VALID.len(), byte in any::<u8>()) {
        let mut bytes = VALID.as_bytes().to_vec();
        bytes[pos] = byte;
        let _ = decode_event(&bytes);
        let _ = decode_batch(&bytes);
    }

    #[test]
    fn arbitrary_json_text_never_panics(s in "[\\[\\]{}\",:0-9a-z .eE+-]{0,200}") {
        let _ = decode_event(s.as_bytes());
        let _ = decode_batch(s.as_bytes());
    }
}

#[test]
fn huge_numbers_are_errors() {
    fn decodes(field: &str, number: &str) -> bool {
        let text = VALID.replacen(&format!("\"{field}\":1"), &format!("\"{field}\":{number}"), 1);
        assert_ne!(text, VALID, "{field} is in the template");
        decode_event(text.as_bytes()).is_ok()
    }
    // Floats: overflow is an error, underflow to 0 and large finite values are numbers.
    for (number, ok) in
        [("1e400", false), ("-1e400", false), ("1e-400", true), ("18446744073709551616", true)]
    {
        assert_eq!(decodes("elapsed_s", number), ok, "elapsed_s {number}");
    }
    // Integers: anything past u64, negative or fractional is an error.
    for number in ["18446744073709551616", "-1", "1.5", "1e400"] {
        assert!(!decodes("seq", number), "seq {number}");
    }
    assert!(decodes("seq", "18446744073709551615"));
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    for depth in [200, 100_000] {
        let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert!(decode_event(nested.as_bytes()).is_err());
        assert!(decode_batch(nested.as_bytes()).is_err());
        // Where the value is read (hyperparameters), nesting past serde_json's limit is an error.
        let started = format!(
            r#"{{"v":1,"run":"r","seq":0,"time":"2026-11-27T09:46:06Z","type":"run_started","name":"n","host":"h","pid":1,"n_epochs":1,"batches_per_epoch":1,"metric_names":[],"hyper":{{"x":{nested}}}}}"#
        );
        assert!(decode_event(started.as_bytes()).is_err(), "depth {depth}");
        // An unknown field is skipped without recursion: no stack overflow, and the event still decodes.
        let text = VALID.replace("\"valid_loss\":0.4", &format!("\"extra\":{nested}"));
        assert!(decode_event(text.as_bytes()).is_ok(), "depth {depth}");
    }
}

#[test]
fn one_mib_strings_are_handled() {
    let big = "x".repeat(1 << 20);
    let text = VALID.replace("\"run\":\"r1\"", &format!("\"run\":\"{big}\""));
    let event = decode_event(text.as_bytes()).expect("a long run id is still an event");
    assert_eq!(event.run.len(), 1 << 20);
    let text = VALID.replace("\"type\":\"epoch_ended\"", &format!("\"type\":\"{big}\""));
    let err = decode_event(text.as_bytes()).expect_err("unknown type");
    assert!(err.to_string().len() < 200, "the error message is clipped");
}
