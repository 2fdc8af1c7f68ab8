//! Batch mode (`batch = N`): one POST of a JSON array, answered as a whole, retried as a whole.

use std::time::Duration;

use herald_plugin::{Notification, NotifierType as _};
use herald_webhook::{WebhookConfig, signature};

use crate::{Fake, sample, webhook};

/// `sample(seq)` of run `run`.
fn of_run(run: &str, seq: u64) -> Notification {
    let mut n = sample(seq);
    n.event.run = run.to_owned();
    n.run.run = run.to_owned();
    n
}

/// The (run, seq) of each object of a batch body, checking that it is an array.
fn runs_and_seqs(body: &[u8]) -> Vec<(String, u64)> {
    let value: serde_json::Value = serde_json::from_slice(body).expect("the body is JSON");
    let items = value.as_array().expect("a batch body is a JSON array");
    items
        .iter()
        .map(|o| {
            (
                o["run"].as_str().expect("run is a string").to_owned(),
                o["seq"].as_u64().expect("seq is a number"),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_batch_is_one_signed_post_of_an_array_of_the_single_objects() {
    let fake = Fake::start().await;
    let single = webhook("hook", &format!("url = '{}'\nsecret = 'k3y'", fake.url("ok")));
    let batched = webhook("hook", &format!("url = '{}'\nsecret = 'k3y'\nbatch = 500", fake.url("ok")));
    assert_eq!(single.max_batch(), 1);
    assert_eq!(batched.max_batch(), 500);
    let ns = vec![of_run("a", 1), of_run("b", 1), of_run("a", 2)];
    let results = batched.deliver_batch(&ns).await;
    assert_eq!(results.len(), 3);
    for r in &results {
        let receipt = r.as_ref().expect("the fake answers 200");
        assert_eq!(receipt.0["status"], 200);
    }
    single.deliver(&ns[0]).await.expect("the fake answers 200");
    let got = fake.received();
    assert_eq!(got.len(), 2, "one POST for the batch, one for the single notification");
    let (batch, one) = (&got[0], &got[1]);
    assert_eq!(runs_and_seqs(&batch.body), vec![("a".into(), 1), ("b".into(), 1), ("a".into(), 2)]);
    // Each array item is exactly the object sent singly.
    let items: Vec<serde_json::Value> = serde_json::from_slice(&batch.body).expect("JSON");
    let alone: serde_json::Value = serde_json::from_slice(&one.body).expect("JSON");
    assert_eq!(items[0], alone);
    assert_eq!(items[1]["idempotency_key"], "b:1:hook");
    // The signature covers the batch body's exact bytes.
    assert_eq!(batch.headers["x-herald-signature"], signature(b"k3y", &batch.body).as_str());
    assert_eq!(batch.headers["content-type"], "application/json");
    assert!(batch.headers.get("idempotency-key").is_none(), "keys are per item in a batch");
    assert_eq!(one.headers["idempotency-key"], "a:1:hook");

    // In batch mode a lone notification goes as an array of one, so the receiver sees one shape.
    batched.deliver(&of_run("c", 9)).await.expect("the fake answers 200");
    let got = fake.received();
    assert_eq!(runs_and_seqs(&got[2].body), vec![("c".into(), 9)]);
}

#[tokio::test]
async fn a_rate_limited_batch_fails_whole_and_arrives_once_in_order_on_retry() {
    let fake = Fake::start().await;
    let hook = webhook("hook", &format!("url = '{}'\nbatch = 500", fake.url("rate-once")));
    let mut ns: Vec<Notification> = (1..=5).map(|seq| of_run("r", seq)).collect();
    ns.insert(2, of_run("s", 1));
    let first = hook.deliver_batch(&ns).await;
    assert_eq!(first.len(), ns.len());
    for r in &first {
        let err = r.as_ref().expect_err("the fake answers 429 first");
        assert!(err.retryable, "{err}");
        assert_eq!(err.code.as_deref(), Some("http_429"), "{err}");
        assert_eq!(err.retry_after, Some(Duration::from_secs(1)), "Retry-After is honoured");
    }
    // The host retries the same notifications, in the same order, as its next attempt.
    for n in &mut ns {
        n.attempt = 2;
    }
    let second = hook.deliver_batch(&ns).await;
    assert!(second.iter().all(Result::is_ok), "{second:?}");
    let got = fake.received();
    assert_eq!(got.len(), 2, "the refused POST and its retry");
    assert_eq!(got[0].body, got[1].body, "the retry is the same batch");
    assert_eq!(got[1].headers["x-herald-attempt"], "2");
    let delivered = runs_and_seqs(&got[1].body);
    let expected: Vec<(String, u64)> = ns.iter().map(|n| (n.event.run.clone(), n.event.seq)).collect();
    assert_eq!(delivered, expected, "every notification once, in order");
}

#[tokio::test]
async fn a_failed_batch_fails_every_notification_with_the_answer() {
    let fake = Fake::start().await;
    let hook = webhook("hook", &format!("url = '{}'\nbatch = 10", fake.url("bad")));
    let results = hook.deliver_batch(&[of_run("a", 1), of_run("a", 2)]).await;
    for r in results {
        let err = r.expect_err("the fake answers 400");
        assert!(!err.retryable, "{err}");
        assert!(err.message.contains("bad payload"), "{err}");
    }
    assert_eq!(fake.received().len(), 1);
}

#[test]
fn batch_errors_name_the_key() {
    for (text, part) in [
        ("batch = 0", "must be 1 to 1000"),
        ("batch = 1001", "must be 1 to 1000"),
        ("batch = -1", "batch"),
        ("batch = 'many'", "batch"),
    ] {
        let table: toml::Table = format!("url = 'http://h/'\n{text}").parse().expect("valid TOML");
        let err = WebhookConfig::from_table("h", table).err().expect(text);
        assert_eq!(err.key.as_deref(), Some("batch"), "{text}: {err}");
        assert!(err.to_string().contains(part), "{text}: {err}");
    }
}
