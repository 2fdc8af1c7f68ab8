//! Telegram end to end: the real `herald serve` with a `telegram` notifier against the fake Bot API
//! (herald-fakes). A run's events posted to the daemon make one live message edited once per epoch, new
//! messages with sound at start and finish and the loss curve at the end; a daemon restart mid-run keeps
//! editing the same message; a 429 storm delays but loses nothing and sends nothing twice; `/stop` from an
//! allowed chat, confirmed with the button, stops the run at its next post and the live message says
//! stopped, while `/stop` from another chat does nothing.

use std::time::Duration;

use herald_fakes::telegram::{FakeTelegram, Message};
use serde_json::{Value, json};

use crate::daemon::{Daemon, event, free_port, wait_for};

pub(crate) const TOKEN: &str = "777000:E2E-test_token";
pub(crate) const CHAT: i64 = 31337;
pub(crate) const OTHER_CHAT: i64 = 4040;
pub(crate) const LONG: Duration = Duration::from_secs(40);

/// The fake Bot API on its own runtime (the test thread stays synchronous, like the daemon tests); shared
/// with the other topics that talk to a phone.
pub(crate) struct Bot {
    pub(crate) fake: FakeTelegram,
    _runtime: tokio::runtime::Runtime,
}

impl Bot {
    pub(crate) fn start() -> Bot {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let fake = runtime.block_on(FakeTelegram::start(TOKEN));
        Bot { fake, _runtime: runtime }
    }

    pub(crate) fn messages(&self) -> Vec<Message> {
        self.fake.bot_messages(CHAT)
    }

    /// Wait until the chat holds `n` bot messages and `check` holds.
    pub(crate) fn wait(&self, what: &str, check: impl Fn(&[Message]) -> bool) -> Vec<Message> {
        wait_for(what, LONG, || {
            let m = self.messages();
            check(&m).then_some(m)
        })
    }

    /// Send `text` from the allowed chat and wait for the answer: the first new message that starts with
    /// `starts`.
    pub(crate) fn ask(&self, text: &str, starts: &str) -> Message {
        let before = self.messages().len();
        self.fake.user_message(CHAT, 5, text);
        let m = self.wait(&format!("the answer to {text}"), |m| {
            m.iter().skip(before).any(|x| x.text.starts_with(starts))
        });
        m.into_iter().skip(before).find(|x| x.text.starts_with(starts)).expect("found above")
    }

    /// Successful edits of the live message so far.
    pub(crate) fn edits(&self) -> usize {
        self.fake.ok_calls_to("editMessageText").len()
    }
}

/// A daemon on `port` in `dir` with one `telegram` notifier for [`CHAT`] at the fake Bot API `api`.
pub(crate) fn config(dir: &std::path::Path, port: u16, api: &str) -> String {
    config_with(dir, port, api, "")
}

/// [`config`] with more `[daemon]` keys (`daemon`: whole lines).
pub(crate) fn config_with(dir: &std::path::Path, port: u16, api: &str, daemon: &str) -> String {
    format!(
        r#"[daemon]
listen = "127.0.0.1:{port}"
socket = "{dir}/herald.sock"
state_dir = "{dir}/state"
drain_timeout = "2s"
{daemon}

[[notifier]]
name = "phone"
type = "telegram"
token = "{TOKEN}"
chat_id = {CHAT}
api_url = "{api}"
"#,
        dir = dir.display()
    )
}

fn started(run: &str) -> String {
    event(
        run,
        0,
        "run_started",
        json!({ "name": "digits <mlp>", "host": "e2e-box", "pid": 1, "n_epochs": 3, "batches_per_epoch": 4, "metric_names": ["accuracy"] }),
    )
}

fn epoch(run: &str, seq: u64, e: u32) -> String {
    event(
        run,
        seq,
        "epoch_ended",
        json!({ "epoch": e, "n_epochs": 3, "train_loss": 1.0 / f64::from(e + 2), "valid_loss": 0.9 / f64::from(e + 1), "metrics": {"accuracy": 0.5 + f64::from(e) / 10.0}, "elapsed_s": 1.5 }),
    )
}

/// The four batches of epoch `e` as one JSON array (their smoothed losses make the plot).
fn batches(run: &str, first_seq: u64, e: u32) -> String {
    let items: Vec<String> = (0..4u64)
        .map(|b| {
            event(
                run,
                first_seq + b,
                "batch_ended",
                json!({ "epoch": e, "batch": b, "n_batches": 4, "loss": 1.0, "smooth_loss": 2.0 / (f64::from(e) * 4.0 + b as f64 + 1.0), "lr": 0.01 }),
            )
        })
        .collect();
    format!("[{}]", items.join(","))
}

fn finished(run: &str, seq: u64, status: &str) -> String {
    event(run, seq, "run_finished", json!({ "status": status, "reason": "done", "duration_s": 9.0 }))
}

fn post(d: &Daemon, body: &str) -> Value {
    let (status, reply) = d.post(body);
    assert_eq!(status, 202, "{reply}");
    reply
}

fn live(messages: &[Message]) -> Message {
    messages.first().cloned().expect("the live message")
}

#[test]
fn a_run_makes_one_live_message_edited_per_epoch_then_a_finish_message_and_the_loss_curve() {
    let bot = Bot::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let d = Daemon::start(dir.path(), port, &config(dir.path(), port, &bot.fake.url));
    let run = "tg-run-1";
    post(&d, &started(run));
    let m = bot.wait("the live message", |m| m.len() == 1);
    assert!(!m[0].silent, "the start rings");
    assert!(m[0].text.starts_with("digits <mlp>: started\n"), "{}", m[0].text);
    let mut seq = 1;
    for e in 0..3u32 {
        post(&d, &batches(run, seq, e));
        seq += 4;
        post(&d, &epoch(run, seq, e));
        seq += 1;
        let m = bot.wait(&format!("edit {}", e + 1), |m| m.len() == 1 && m[0].edits == e + 1);
        assert!(m[0].text.contains(&format!("digits <mlp>: epoch {}/3", e + 1)), "{}", m[0].text);
    }
    post(&d, &finished(run, seq, "completed"));
    let m = bot.wait("finish message and photo", |m| m.len() == 3 && m[0].edits == 4);
    let (live, finish, photo) = (&m[0], &m[1], &m[2]);
    assert!(live.text.starts_with("digits <mlp>: completed\n"), "{}", live.text);
    // The default table fits a phone (34 characters).
    assert!(
        live.text.contains("\nep  train  valid    acc  time\n 0 0.5000 0.9000 0.5000 00:01\n 1 "),
        "{}",
        live.text
    );
    assert!(live.html.contains("digits &lt;mlp&gt;"), "escaped: {}", live.html);
    assert!(!finish.silent && finish.text.contains("completed after 00:09"), "{finish:?}");
    assert!(photo.photo.is_some_and(|size| size > 1000), "a PNG loss curve: {photo:?}");
    assert!(photo.text.starts_with("digits <mlp>: completed"), "{}", photo.text);
    let calls = bot.fake.calls();
    let count = |m: &str| calls.iter().filter(|c| c.method == m && c.ok()).count();
    assert_eq!((count("sendMessage"), count("editMessageText"), count("sendPhoto")), (2, 4, 1));
    assert!(calls.iter().all(|c| c.ok()), "every call accepted");
    // The edits came at least about a second apart (one edit per second per chat).
    let edits: Vec<_> = calls.iter().filter(|c| c.method == "editMessageText").map(|c| c.at).collect();
    for pair in edits.windows(2) {
        assert!(pair[1] - pair[0] >= Duration::from_millis(900), "{:?}", pair[1] - pair[0]);
    }
}

#[test]
fn a_restarted_daemon_keeps_editing_the_same_message() {
    let bot = Bot::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let mut d = Daemon::start(dir.path(), port, &config(dir.path(), port, &bot.fake.url));
    let run = "tg-run-2";
    post(&d, &started(run));
    post(&d, &epoch(run, 1, 0));
    let first = live(&bot.wait("the first edit", |m| m.len() == 1 && m[0].edits == 1));
    assert!(d.terminate(), "the daemon stops cleanly:\n{}", d.log());
    d.restart();
    post(&d, &epoch(run, 2, 1));
    let m = bot.wait("the edit after the restart", |m| m.len() == 1 && m[0].edits == 2);
    assert_eq!(m[0].message_id, first.message_id, "the same live message");
    assert!(m[0].text.contains("\n 1 0.3333 "), "{}", m[0].text);
    post(&d, &epoch(run, 3, 2));
    bot.wait("the third edit", |m| m.len() == 1 && m[0].edits == 3);
}

#[test]
fn a_429_storm_delays_messages_but_loses_and_repeats_none() {
    let bot = Bot::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let d = Daemon::start(dir.path(), port, &config(dir.path(), port, &bot.fake.url));
    // Flood control on sends, edits and the photo, each asking for one second.
    bot.fake.fail_with_429(Some("sendMessage"), 3, 1);
    bot.fake.fail_with_429(Some("editMessageText"), 3, 1);
    bot.fake.fail_with_429(Some("sendPhoto"), 1, 1);
    let run = "tg-run-3";
    let mut all = vec![started(run)];
    let mut seq = 1;
    for e in 0..3u32 {
        let b = batches(run, seq, e);
        all.push(b[1..b.len() - 1].to_owned());
        seq += 4;
        all.push(epoch(run, seq, e));
        seq += 1;
    }
    all.push(finished(run, seq, "completed"));
    post(&d, &format!("[{}]", all.join(",")));
    let m = bot.wait("the run's final state after the storm", |m| {
        m.len() == 3 && m[0].text.starts_with("digits <mlp>: completed")
    });
    assert!(m[0].text.contains("\n 2 0.2500 "), "every epoch is in the final table: {}", m[0].text);
    let calls = bot.fake.calls();
    let refused: Vec<_> = calls.iter().filter(|c| c.status == 429).collect();
    assert_eq!(refused.len(), 7, "the storm happened: {refused:?}");
    // Each retry came no earlier than the retry_after Telegram asked for.
    for r in &refused {
        let sends = ["sendMessage", "editMessageText", "sendPhoto"];
        let next = calls
            .iter()
            .find(|c| c.at > r.at && c.ok() && sends.contains(&c.method.as_str()))
            .expect("a later send went through");
        assert!(next.at - r.at >= Duration::from_millis(990), "{:?}", next.at - r.at);
    }
    assert_eq!(bot.messages().len(), 3, "nothing sent twice: {:?}", bot.messages());
    let phone = wait_for("the outbox to empty", LONG, || {
        let status = d.status();
        let phone = status["notifiers"][0].clone();
        (phone["queue"].as_u64() == Some(0)).then_some(phone)
    });
    assert_eq!(phone["gave_up"].as_u64(), Some(0), "{phone}");
}

#[test]
fn stop_from_the_phone_is_confirmed_with_a_button_and_only_from_allowed_chats() {
    let bot = Bot::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let d = Daemon::start(dir.path(), port, &config(dir.path(), port, &bot.fake.url));
    wait_for("setMyCommands", LONG, || bot.fake.commands());
    let run = "tg-run-4";
    post(&d, &started(run));
    let reply = post(&d, &epoch(run, 1, 0));
    assert_eq!(reply["control"][run]["stop"], json!(false));
    bot.wait("the live message", |m| m.len() == 1 && m[0].edits == 1);

    // Another chat: no answer, no stop.
    bot.fake.user_message(OTHER_CHAT, 9, "/stop 1");
    bot.fake.user_message(OTHER_CHAT, 9, "/runs");
    bot.fake.user_message(CHAT, 5, "/runs");
    let m = bot.wait("the /runs answer", |m| m.len() == 2);
    assert!(m[1].text.contains("1. digits <mlp> · active"), "{}", m[1].text);
    assert!(bot.fake.bot_messages(OTHER_CHAT).is_empty(), "no answer to a chat not allowed");
    assert_eq!(
        post(&d, &epoch(run, 2, 1))["control"][run]["stop"],
        json!(false),
        "no stop from another chat"
    );
    assert!(d.log().contains("not in allowed_chats"), "the ignored chat is logged");

    bot.fake.user_message(CHAT, 5, "/stop 1");
    let m = bot.wait("the stop question", |m| m.len() == 3);
    let question = m[2].clone();
    assert!(question.text.starts_with("Stop digits <mlp>"), "{}", question.text);
    let data = question
        .reply_markup
        .as_ref()
        .and_then(|k| k["inline_keyboard"][0][0]["callback_data"].as_str())
        .expect("a stop button")
        .to_owned();
    assert_eq!(
        post(&d, &epoch(run, 3, 2))["control"][run]["stop"],
        json!(false),
        "nothing stops before the button"
    );
    bot.fake.press_button(OTHER_CHAT, question.message_id, 9, &data);
    bot.fake.press_button(CHAT, question.message_id, 5, &data);
    bot.wait("the question answered", |m| {
        m.len() == 3 && m[2].text.starts_with("Stop requested for digits <mlp>")
    });

    // The trainer sees the stop in the answer to its next post (as herald train's forwarder does) and ends.
    let reply = wait_for("the stop in the control answer", LONG, || {
        let r = post(&d, &event(run, 4, "heartbeat", json!({})));
        (r["control"][run]["stop"] == json!(true)).then_some(r)
    });
    assert!(
        reply["control"][run]["reason"].as_str().is_some_and(|r| r.contains("Telegram by @user5")),
        "{reply}"
    );
    post(&d, &finished(run, 5, "stopped"));
    let m = bot.wait("the stopped run", |m| {
        m[0].text.starts_with("digits <mlp>: stopped")
            && m.iter().any(|x| x.text == "digits <mlp> stopped after epoch 3/3.")
    });
    assert!(m.iter().any(|x| x.text.contains("stopped after 00:09")), "{m:?}");
    assert!(bot.fake.bot_messages(OTHER_CHAT).is_empty());
}

#[test]
fn setup_telegram_finds_the_chat_and_writes_the_config() {
    let bot = Bot::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("conf/herald.toml");
    bot.fake.user_message(CHAT, 5, "hello bot");
    let out = crate::herald()
        .arg("--config")
        .arg(&config)
        .args(["setup", "telegram", "--token", TOKEN, "--write", "--wait", "20", "--api-url", &bot.fake.url])
        .output()
        .expect("run herald setup telegram");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("Found the bot @herald_test_bot"), "{stderr}");
    assert!(stderr.contains(&format!("(id {CHAT})")), "{stderr}");
    let text = std::fs::read_to_string(&config).expect("the config was written");
    assert!(text.contains(&format!("chat_id = {CHAT}")) && text.contains("type = \"telegram\""), "{text}");
    assert_eq!(bot.fake.pending_updates(), 0, "the message was confirmed, so the daemon will not answer it");
    // The written file is a valid configuration.
    let check = crate::herald().arg("--config").arg(&config).arg("check").output().expect("herald check");
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    // A second run does not add a second notifier of the same name.
    bot.fake.user_message(CHAT, 5, "again");
    let again = crate::herald()
        .arg("--config")
        .arg(&config)
        .args(["setup", "telegram", "--token", TOKEN, "--write", "--wait", "20", "--api-url", &bot.fake.url])
        .output()
        .expect("run herald setup telegram");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already has a notifier named `telegram`"));
    // A wrong token is refused before any waiting.
    let wrong = crate::herald()
        .args(["setup", "telegram", "--token", "1:wrong", "--wait", "1", "--api-url", &bot.fake.url])
        .output()
        .expect("run herald setup telegram");
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("does not know this bot token"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
}

/// Every ```toml example in the Telegram and Slack docs is a valid configuration for this build.
#[test]
fn the_docs_examples_are_valid_configurations() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let registry = herald_daemon::builtins::registry();
    for doc in ["docs/notifiers/telegram.md", "docs/notifiers/slack.md"] {
        let text = std::fs::read_to_string(root.join(doc)).expect("the doc exists");
        let blocks: Vec<&str> =
            text.split("```toml\n").skip(1).filter_map(|rest| rest.split("```").next()).collect();
        assert!(!blocks.is_empty(), "{doc} has a TOML example");
        for block in blocks {
            let config = herald_daemon::config::parse(block, doc).unwrap_or_else(|e| panic!("{doc}: {e}"));
            assert_eq!(config.notifiers.len(), 1, "{doc}");
            config.notifiers[0].build(&registry).unwrap_or_else(|e| panic!("{doc}: {e}\n{block}"));
        }
    }
}

#[test]
fn stop_from_the_phone_ends_a_running_herald_train_and_the_live_message_says_stopped() {
    let bot = Bot::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let d = Daemon::start(dir.path(), port, &config(dir.path(), port, &bot.fake.url));
    wait_for("setMyCommands", LONG, || bot.fake.commands());
    let digits = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/digits.csv.gz");
    // Far more epochs than the test waits for: only the stop can end this run in time.
    let mut train = crate::KillOnDrop(
        crate::herald()
            .arg("--config")
            .arg(&d.config)
            .args(["train", "--epochs", "100000", "--threads", "1", "--name", "phone-stop", "--data"])
            .arg(digits)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start herald train"),
    );
    bot.wait("the live message with a finished epoch", |m| {
        m.first().is_some_and(|l| l.text.contains("phone-stop") && l.edits >= 1)
    });

    bot.fake.user_message(CHAT, 5, "/stop phone-stop");
    let m = bot.wait("the stop question", |m| m.iter().any(|x| x.reply_markup.is_some()));
    let question = m.iter().find(|x| x.reply_markup.is_some()).cloned().expect("the question");
    assert!(question.text.starts_with("Stop phone-stop"), "{}", question.text);
    let data = question
        .reply_markup
        .as_ref()
        .and_then(|k| k["inline_keyboard"][0][0]["callback_data"].as_str())
        .expect("a stop button")
        .to_owned();
    bot.fake.press_button(CHAT, question.message_id, 5, &data);

    let status = wait_for("herald train to end after the stop", LONG, || {
        train.0.try_wait().expect("poll herald train")
    });
    assert!(status.success(), "herald train: {status}");
    let m = bot.wait("the live message to say stopped", |m| {
        m.first().is_some_and(|l| l.text.starts_with("phone-stop: stopped"))
    });
    assert!(!live(&m).text.contains("100000/100000"), "{}", live(&m).text);
}
