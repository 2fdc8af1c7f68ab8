//! The fake answers as the Bot API does, over real HTTP: methods in any case, tokens, parse modes, lengths,
//! edits, updates by offset, and 409 for a second concurrent poller.

use std::time::Duration;

use super::*;

async fn post(url: &str, body: Value) -> (u16, Value) {
    // A tiny client over a raw TCP stream keeps this crate free of an HTTP client.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").expect("http url");
    let (host, path) = rest.split_once('/').expect("a path");
    let mut stream = tokio::net::TcpStream::connect(host).await.expect("connect");
    let body = body.to_string();
    let request = format!(
        "POST /{path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    let status: u16 = answer[9..12].parse().expect("status");
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    (status, serde_json::from_str(body).expect("JSON answer"))
}

#[tokio::test]
async fn behaves_like_the_bot_api() {
    let fake = FakeTelegram::start("1:abc").await;
    let base = format!("{}/bot1:abc", fake.url);
    let (s, v) = post(
        &format!("{base}/SendMessage"),
        json!({"chat_id": 5, "text": "<b>hi</b> &lt;3", "parse_mode": "HTML"}),
    )
    .await;
    assert_eq!((s, v["result"]["text"].as_str()), (200, Some("hi <3")));
    let id = v["result"]["message_id"].as_i64().expect("id");
    let (s, v) =
        post(&format!("{base}/sendMessage"), json!({"chat_id": 5, "text": "a < b", "parse_mode": "HTML"}))
            .await;
    assert_eq!(s, 400);
    assert!(v["description"].as_str().expect("text").starts_with("Bad Request: can't parse entities"), "{v}");
    let (s, _) = post(
        &format!("{base}/editMessageText"),
        json!({"chat_id": 5, "message_id": id, "text": "<b>hi</b> &lt;3", "parse_mode": "HTML"}),
    )
    .await;
    assert_eq!(s, 400);
    let (s, v) =
        post(&format!("{base}/editMessageText"), json!({"chat_id": 5, "message_id": 999, "text": "x"})).await;
    assert_eq!((s, v["description"].as_str()), (400, Some("Bad Request: message to edit not found")));
    let (s, v) = post(&format!("{base}/sendMessage"), json!({"chat_id": 5, "text": "x".repeat(4097)})).await;
    assert_eq!((s, v["description"].as_str()), (400, Some("Bad Request: message is too long")));
    fake.fail_with_429(Some("sendMessage"), 1, 3);
    let (s, v) = post(&format!("{base}/sendMessage"), json!({"chat_id": 5, "text": "x"})).await;
    assert_eq!((s, v["parameters"]["retry_after"].as_i64()), (429, Some(3)));
    let (s, _) = post(&format!("{}/bot9:wrong/getMe", fake.url), json!({})).await;
    assert_eq!(s, 401);
    fake.user_message(5, 77, "/runs");
    fake.user_message(5, 77, "/help");
    let (_, v) = post(&format!("{base}/getUpdates"), json!({"offset": 0, "timeout": 0})).await;
    let updates = v["result"].as_array().expect("updates").clone();
    assert_eq!(updates.len(), 2);
    let last = updates[1]["update_id"].as_i64().expect("id");
    let (_, v) = post(&format!("{base}/getUpdates"), json!({"offset": last + 1, "timeout": 0})).await;
    assert_eq!(v["result"], json!([]));
    assert_eq!(fake.pending_updates(), 0);
    assert_eq!(fake.calls()[0].sent_as, "SendMessage");
    assert_eq!(fake.calls()[0].method, "sendMessage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_concurrent_get_updates_gets_409() {
    let fake = FakeTelegram::start("1:abc").await;
    let url = format!("{}/bot1:abc/getUpdates", fake.url);
    let first = tokio::spawn({
        let url = url.clone();
        async move { post(&url, json!({"offset": 0, "timeout": 2})).await }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while fake.state().polls == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the first poll never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (s, v) = post(&url, json!({"offset": 0, "timeout": 0})).await;
    assert_eq!((s, v["error_code"].as_i64()), (409, Some(409)), "{v}");
    assert_eq!(fake.conflicts(), 1);
    assert_eq!(first.await.expect("first poll").0, 200);
    let (s, _) = post(&url, json!({"offset": 0, "timeout": 0})).await;
    assert_eq!((s, fake.conflicts()), (200, 1), "one poll at a time is fine");
}
