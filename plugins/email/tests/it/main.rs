//! herald-email against a real SMTP server (aiosmtpd), plain and with STARTTLS: the received MIME as a
//! mail client parses it (text part, HTML table, escaping, inline PNG), threading, connection reuse and the
//! SMTP answers. (Digests are the daemon's: `crates/daemon/src/quiet/`.)

mod smtp;

use std::time::Duration;

use base64::Engine as _;
use herald_event::{EpochEnded, Event, Metrics, Payload, RunFailed, RunFinished, RunStarted, RunStatus};
use herald_fakes::sample;
use herald_plugin::{Health, Image, Notification, Notifier, NotifierType, Receipt, RunContext, render};
use serde_json::Value;
use smtp::{Certs, Security, Sink};

/// A 1×1 PNG.
const PNG: &[u8] = &[
    0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44, 0x52, 0x00,
    0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1F, 0x15, 0xC4, 0x89, 0x00,
    0x00, 0x00, 0x0D, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9C, 0x63, 0xF8, 0xCF, 0xC0, 0xF0, 0x1F, 0x00, 0x05,
    0x00, 0x01, 0xFF, 0x89, 0x99, 0x3D, 0x1D, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4E, 0x44, 0xAE, 0x42,
    0x60, 0x82,
];

const HOSTILE: &str = "<b>Bob & \"Alice\"</b>";

fn started(name: &str) -> RunStarted {
    RunStarted { metric_names: vec!["acc<1>".into()], ..sample::started(name) }
}

fn epoch(n: u32) -> EpochEnded {
    EpochEnded { metrics: Metrics(vec![("acc<1>".into(), 0.9)]), ..sample::epoch(n) }
}

/// A run delivered event by event with the previous receipt, as the daemon does.
struct Run {
    ctx: RunContext,
    previous: Option<Receipt>,
    seq: u64,
    start: time::OffsetDateTime,
}

impl Run {
    fn new() -> Run {
        Run { ctx: RunContext::new("run-1"), previous: None, seq: 0, start: time::OffsetDateTime::now_utc() }
    }

    /// The notification for `payload` happening `at` after the run's start.
    fn note_at(&mut self, payload: impl Into<Payload>, at: Duration, image: Option<Image>) -> Notification {
        let mut event = Event::now("run-1", self.seq, payload);
        event.time = self.start + at;
        self.seq += 1;
        let n = render::notification(&self.ctx, &event, self.previous.clone(), image, 1);
        self.ctx.apply(&event);
        n
    }

    async fn deliver_at(
        &mut self,
        n: &dyn Notifier,
        payload: impl Into<Payload>,
        at: Duration,
    ) -> Notification {
        let note = self.note_at(payload, at, None);
        self.previous = Some(n.deliver(&note).await.expect("delivered"));
        // lettre hands a connection back to its pool in a task of its own; between deliveries the daemon's
        // worker yields to the runtime too.
        for _ in 0..8 {
            tokio::task::yield_now().await;
        }
        note
    }

    async fn deliver(&mut self, n: &dyn Notifier, payload: impl Into<Payload>) -> Notification {
        let at = Duration::from_secs(self.seq);
        self.deliver_at(n, payload, at).await
    }
}

fn notifier(extra: &str) -> Box<dyn Notifier> {
    let text =
        format!("from = 'Herald <herald@example.org>'\nto = ['me@example.org', 'you@example.org']\n{extra}");
    herald_email::EmailConfig::from_table("mail", text.parse().expect("test config is TOML"))
        .expect("valid config")
}

fn plain(sink: &Sink, extra: &str) -> Box<dyn Notifier> {
    notifier(&format!("smtp_host = '127.0.0.1'\nsmtp_port = {}\ntls = 'none'\n{extra}", sink.port))
}

fn part<'a>(mail: &'a Value, content_type: &str) -> &'a Value {
    mail["parts"]
        .as_array()
        .expect("parts")
        .iter()
        .find(|p| p["content_type"] == content_type)
        .unwrap_or_else(|| panic!("no {content_type} part in {mail:#}"))
}

fn part_text(mail: &Value, content_type: &str) -> String {
    part(mail, content_type)["text"].as_str().expect("text part").replace("\r\n", "\n")
}

fn content_types(mail: &Value) -> Vec<String> {
    mail["parts"]
        .as_array()
        .expect("parts")
        .iter()
        .map(|p| p["content_type"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[tokio::test]
async fn mails_text_and_html_table_with_everything_escaped() {
    let sink = Sink::start(Security::Plain);
    let n = plain(&sink, "subject_prefix = '[train] '");
    let mut run = Run::new();
    run.deliver(n.as_ref(), started(HOSTILE)).await;
    run.deliver(n.as_ref(), epoch(0)).await;
    let note = run.deliver(n.as_ref(), epoch(1)).await;
    let mails = sink.wait_for(3);
    let mail = &mails[2];
    assert_eq!(mail["mail_from"], "herald@example.org");
    assert_eq!(mail["rcpt_tos"], serde_json::json!(["me@example.org", "you@example.org"]));
    assert_eq!(mail["subject"], format!("[train] {HOSTILE}: epoch 2/3"));
    assert_eq!(content_types(mail), ["multipart/alternative", "text/plain", "text/html"]);
    assert_eq!(part_text(mail, "text/plain").trim_end(), note.text.trim_end());
    assert!(note.text.contains("epoch     train_loss  valid_loss  acc<1>    time"), "{}", note.text);

    let html = part_text(mail, "text/html");
    assert!(html.contains("<table"), "{html}");
    assert!(html.contains(">acc&lt;1&gt;</th>"), "metric names escaped: {html}");
    for row in [
        ["0", "0.500000", "0.400000", "0.900000", "00:05"],
        ["1", "0.250000", "0.400000", "0.900000", "00:05"],
    ] {
        let cells: String = row
            .iter()
            .map(|c| format!(">{c}</td>"))
            .collect::<Vec<_>>()
            .join("<td style=\"padding:2px 10px;text-align:right;border-bottom:1px solid #ddd\"");
        assert!(html.contains(&cells), "row {row:?} in {html}");
    }
    assert!(html.contains("&lt;b&gt;Bob &amp; &quot;Alice&quot;&lt;/b&gt;"), "{html}");
    assert!(!html.contains("<b>Bob") && !html.contains("acc<1>"), "nothing unescaped: {html}");

    // One thread per run, one Message-ID per event, one connection for all three mails.
    let first_id = mails[0]["headers"]["message-id"].as_str().expect("message id").to_owned();
    assert_eq!(first_id, "<run-1.0.run_started@herald>");
    assert_eq!(mails[2]["headers"]["in-reply-to"], first_id);
    assert_eq!(mails[2]["headers"]["references"], first_id);
    assert!(mails[0]["headers"].get("in-reply-to").is_none());
    assert!(
        mails.iter().all(|m| m["peer"] == mails[0]["peer"]),
        "the SMTP connection is reused: {:?}",
        mails.iter().map(|m| m["peer"].clone()).collect::<Vec<_>>()
    );
    assert_eq!(n.health_check().await, Health::Ok);
}

#[tokio::test]
async fn run_end_mail_shows_the_loss_curve_inline() {
    let sink = Sink::start(Security::Plain);
    let n = plain(&sink, "");
    let mut run = Run::new();
    run.deliver(n.as_ref(), epoch(0)).await;
    let finished =
        RunFinished { status: RunStatus::Completed, reason: "done".into(), duration_s: 75.0, best: None };
    let image = Image { filename: "loss.png".into(), mime: "image/png".into(), bytes: PNG.to_vec() };
    let note = run.note_at(finished, Duration::from_secs(75), Some(image));
    n.deliver(&note).await.expect("delivered");
    let mails = sink.wait_for(2);
    let mail = &mails[1];
    assert_eq!(
        content_types(mail),
        ["multipart/alternative", "text/plain", "multipart/related", "text/html", "image/png"]
    );
    let html = part_text(mail, "text/html");
    assert!(html.contains("<img src=\"cid:loss-curve@herald\""), "{html}");
    assert!(html.contains("completed after 01:15"), "{html}");
    let png = part(mail, "image/png");
    assert_eq!(png["content_id"], "<loss-curve@herald>");
    assert_eq!(png["disposition"], "inline");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(png["base64"].as_str().expect("base64"))
        .expect("b64");
    assert_eq!(bytes, PNG);
}

#[tokio::test]
async fn failure_mail_carries_the_traceback() {
    let sink = Sink::start(Security::Plain);
    let n = plain(&sink, "");
    let mut run = Run::new();
    run.deliver(n.as_ref(), epoch(0)).await;
    let tb = "Traceback (most recent call last):\n  File \"train.py\", line 9, in <module>\nRuntimeError: CUDA out of memory";
    run.deliver(n.as_ref(), RunFailed { error: "CUDA out of memory".into(), traceback: Some(tb.into()) })
        .await;
    let mail = &sink.wait_for(2)[1];
    assert_eq!(mail["subject"], "[herald] run-1: failed");
    assert!(part_text(mail, "text/plain").contains(tb), "{mail:#}");
    let html = part_text(mail, "text/html");
    assert!(html.contains("line 9, in &lt;module&gt;\nRuntimeError: CUDA out of memory</pre>"), "{html}");
    assert!(html.contains("<table"), "the table so far comes along: {html}");
}

#[tokio::test]
async fn starttls_with_a_private_ca() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = Certs::make(dir.path());
    let sink = Sink::start(Security::Starttls(&certs));
    let base = format!("smtp_host = '127.0.0.1'\nsmtp_port = {}\ntls = 'starttls'\n", sink.port);
    let n = notifier(&format!("{base}ca_file = '{}'", certs.ca.display()));
    assert_eq!(n.health_check().await, Health::Ok);
    let mut run = Run::new();
    run.deliver(n.as_ref(), epoch(0)).await;
    let mails = sink.wait_for(1);
    assert_eq!(mails[0]["tls"], true, "the mail went over TLS");

    // Without the CA the server's certificate is not trusted: a permanent error that says what to do.
    let untrusted = notifier(&base);
    let e =
        untrusted.deliver(&run.note_at(epoch(1), Duration::from_secs(9), None)).await.expect_err("untrusted");
    assert!(!e.retryable && e.code.as_deref() == Some("tls") && e.message.contains("ca_file"), "{e:?}");
    assert!(matches!(untrusted.health_check().await, Health::Unavailable { .. }));
    // And a plain session is refused by a server that requires STARTTLS.
    let cleartext = notifier(&format!("smtp_host = '127.0.0.1'\nsmtp_port = {}\ntls = 'none'", sink.port));
    let e =
        cleartext.deliver(&run.note_at(epoch(1), Duration::from_secs(9), None)).await.expect_err("cleartext");
    assert!(!e.retryable, "{e:?}");
    assert_eq!(sink.mails().len(), 1);
}

#[tokio::test]
async fn login_over_starttls() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = Certs::make(dir.path());
    let sink = Sink::start_with_login(&certs, "herald", "s3cret pass");
    let base = format!(
        "smtp_host = '127.0.0.1'\nsmtp_port = {}\nca_file = '{}'\nusername = 'herald'\n",
        sink.port,
        certs.ca.display()
    );
    let mut run = Run::new();
    let wrong = notifier(&format!("{base}password = 'guess'"));
    let e = wrong.deliver(&run.note_at(epoch(0), Duration::ZERO, None)).await.expect_err("wrong password");
    assert!(!e.retryable && e.message.contains("535") && e.message.contains("`password`"), "{e:?}");
    assert!(!e.message.contains("guess"), "the password is never shown: {e}");
    let n = notifier(&format!("{base}password = 's3cret pass'"));
    run.deliver(n.as_ref(), epoch(0)).await;
    let mail = &sink.wait_for(1)[0];
    assert_eq!((mail["tls"].as_bool(), mail["login"].as_str()), (Some(true), Some("herald")), "{mail:#}");
}

#[tokio::test]
async fn implicit_tls_with_a_private_ca() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = Certs::make(dir.path());
    let sink = Sink::start(Security::Implicit(&certs));
    let n = notifier(&format!(
        "smtp_host = '127.0.0.1'\nsmtp_port = {}\ntls = 'tls'\nca_file = '{}'",
        sink.port,
        certs.ca.display()
    ));
    assert_eq!(n.health_check().await, Health::Ok);
    let mut run = Run::new();
    run.deliver(n.as_ref(), epoch(0)).await;
    assert_eq!(sink.wait_for(1)[0]["tls"], true, "the mail went over TLS");
}

#[tokio::test]
async fn smtp_answers_map_to_delivery_errors() {
    let sink = Sink::start(Security::Plain);
    let base =
        format!("smtp_host = '127.0.0.1'\nsmtp_port = {}\ntls = 'none'\nfrom = 'h@example.org'\n", sink.port);
    let build = |to: &str| {
        herald_email::EmailConfig::from_table("mail", format!("{base}to = ['{to}']").parse().expect("TOML"))
            .expect("valid config")
    };
    let mut run = Run::new();
    let note = run.note_at(epoch(0), Duration::ZERO, None);
    let e = build("reject@example.org").deliver(&note).await.expect_err("550");
    assert!(!e.retryable && e.code.as_deref() == Some("smtp_5xx") && e.message.contains("550"), "{e:?}");
    let e = build("busy@example.org").deliver(&note).await.expect_err("451");
    assert!(e.retryable && e.code.as_deref() == Some("smtp_4xx"), "{e:?}");
    assert!(sink.mails().is_empty());

    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let gone = herald_email::EmailConfig::from_table(
        "mail",
        format!("smtp_host = '127.0.0.1'\nsmtp_port = {port}\ntls = 'none'\nfrom = 'h@example.org'\nto = ['me@example.org']")
            .parse()
            .expect("TOML"),
    )
    .expect("valid config");
    let e = gone.deliver(&note).await.expect_err("nothing listens");
    assert!(e.retryable, "{e:?}");
    assert!(matches!(gone.health_check().await, Health::Unavailable { .. }));
}

#[test]
fn the_documented_examples_build() {
    for table in herald_fakes::docs::examples("email") {
        herald_email::EmailConfig::from_table("docs", table.clone())
            .unwrap_or_else(|e| panic!("{e}\n{table}"));
    }
}
