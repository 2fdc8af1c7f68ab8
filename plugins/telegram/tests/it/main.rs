//! herald-telegram against the fake Bot API (herald-fakes): the live message and its edits, new messages
//! with sound at start and end, the photo, a deleted live message, hostile names, long tracebacks, 429s
//! without duplicates, and commands from allowed and other chats with a test host.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_event::{RunFailed, RunFinished, RunStarted, RunStatus};
use herald_fakes::sample::{self, Run, epoch};
use herald_fakes::telegram::FakeTelegram;
use herald_fakes::wait_until;
use herald_plugin::{Host, HostError, Image, Notifier, NotifierType, RunContext, RunDetail, RunSummary};

mod docs;

/// A token of its own for each test: the pacer is shared per bot token in a process, and one test's 429
/// must not hold another test's chat.
fn token() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    format!("{}:TEST-token_abc", 100_000 + NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}
const CHAT: i64 = 4242;
const OTHER_CHAT: i64 = 999;

fn notifier(fake: &FakeTelegram, extra: &str) -> Box<dyn Notifier> {
    let text = format!("token = '{}'\nchat_id = {CHAT}\napi_url = '{}'\n{extra}", fake.token, fake.url);
    herald_telegram::TelegramConfig::from_table("phone", text.parse().expect("test config is TOML"))
        .expect("valid config")
}

fn started(name: &str) -> RunStarted {
    RunStarted { batches_per_epoch: 100, ..sample::started(name) }
}

fn png() -> Image {
    sample::png(&[1, 2, 3])
}

#[tokio::test]
async fn one_live_message_edited_per_epoch_new_messages_at_start_and_end_and_a_photo() {
    let fake = FakeTelegram::start(&token()).await;
    let n = notifier(&fake, "");
    let mut run = Run::new("run-1");
    let r0 = run.deliver(n.as_ref(), started("digits"), None).await;
    let live = r0.0["live"].as_i64().expect("a live message id");
    for e in 0..3 {
        let r = run.deliver(n.as_ref(), epoch(e), None).await;
        assert_eq!(r.0["live"].as_i64(), Some(live), "the same live message");
    }
    let finished =
        RunFinished { status: RunStatus::Completed, reason: "done".into(), duration_s: 15.0, best: None };
    let r = run.deliver(n.as_ref(), finished, Some(png())).await;
    assert_eq!(r.0["live"].as_i64(), Some(live));

    let methods: Vec<String> = fake.calls().iter().map(|c| c.method.clone()).collect();
    assert_eq!(
        methods,
        [
            "sendMessage",
            "editMessageText",
            "editMessageText",
            "editMessageText",
            "editMessageText",
            "sendMessage",
            "sendPhoto"
        ]
    );
    assert!(fake.calls().iter().all(|c| c.ok()), "{:?}", fake.calls());
    assert!(fake.calls().iter().any(|c| c.sent_as == "SendMessage"), "teloxide calls methods in PascalCase");
    let messages = fake.bot_messages(CHAT);
    assert_eq!(messages.len(), 3, "live, finish, photo: {messages:?}");
    let (live_msg, finish, photo) = (&messages[0], &messages[1], &messages[2]);
    assert_eq!(live_msg.message_id, live);
    assert_eq!(live_msg.edits, 4);
    assert!(!live_msg.silent, "the start rings");
    assert!(live_msg.text.starts_with("digits: completed\n"), "{}", live_msg.text);
    // The default table fits a phone held upright.
    let table = "ep  train  valid    acc  time\n 0 0.5000 0.4000 0.9000 00:05\n 1 0.2500 0.4000 0.9000 00:05\n \
                 2 0.1667 0.4000 0.9000 00:05";
    assert!(live_msg.text.ends_with(&format!("\n{table}")), "{}", live_msg.text);
    assert!(live_msg.html.ends_with(&format!("<pre>{table}</pre>")), "{}", live_msg.html);
    assert!(!finish.silent && finish.text.contains("completed after"), "{finish:?}");
    assert_eq!(photo.photo, Some(7));
    assert!(photo.silent && photo.text.starts_with("digits: completed\n"), "{photo:?}");
}

#[tokio::test]
async fn a_deleted_live_message_is_sent_again() {
    let fake = FakeTelegram::start(&token()).await;
    let n = notifier(&fake, "");
    let mut run = Run::new("run-2");
    let r0 = run.deliver(n.as_ref(), started("x"), None).await;
    let live = r0.0["live"].as_i64().expect("live");
    fake.delete_message(CHAT, live);
    let r1 = run.deliver(n.as_ref(), epoch(0), None).await;
    let new_live = r1.0["live"].as_i64().expect("live");
    assert_ne!(new_live, live);
    let again = fake.bot_messages(CHAT);
    assert_eq!(again.len(), 1);
    assert!(again[0].silent, "epoch updates are quiet");
    // Not modified is a success.
    let same = run.note(epoch(0), None);
    let mut same = same;
    same.previous = Some(r1.clone());
    n.deliver(&same).await.expect("an edit that changes nothing is fine");
    n.deliver(&same).await.expect("an edit that changes nothing is fine");
    assert!(fake.calls().iter().any(|c| c.error.as_deref().is_some_and(|e| e.contains("not modified"))));
}

#[tokio::test]
async fn hostile_names_are_escaped_and_long_tracebacks_split() {
    let fake = FakeTelegram::start(&token()).await;
    let n = notifier(&fake, "");
    let mut run = Run::new("run-3");
    run.deliver(n.as_ref(), started("<b>evil & co</b> <script>"), None).await;
    run.deliver(n.as_ref(), epoch(0), None).await;
    let traceback: String = (0..40)
        .map(|i| format!("  File \"train.py\", line {i}, in <module> {}\n", "x".repeat(150)))
        .collect();
    let failed = RunFailed { error: "RuntimeError: <CUDA> out of memory".into(), traceback: Some(traceback) };
    run.deliver(n.as_ref(), failed, None).await;
    assert!(
        fake.calls().iter().all(|c| c.ok()),
        "every call accepted: {:?}",
        fake.calls().iter().filter(|c| !c.ok()).collect::<Vec<_>>()
    );
    let messages = fake.bot_messages(CHAT);
    assert!(messages[0].text.starts_with("<b>evil & co</b> <script>: failed"), "{}", messages[0].text);
    let failure_parts = &messages[1..];
    assert!(failure_parts.len() >= 2, "the traceback is split: {}", failure_parts.len());
    assert!(failure_parts.iter().all(|m| m.text.encode_utf16().count() <= 4096));
    assert!(failure_parts[0].text.contains("RuntimeError: <CUDA> out of memory"));
    assert!(failure_parts.last().expect("parts").text.contains("line 39, in <module>"));
}

#[tokio::test]
async fn a_429_is_retried_after_exactly_retry_after_without_sending_twice() {
    let fake = FakeTelegram::start(&token()).await;
    let n = notifier(&fake, "");
    let mut run = Run::new("run-4");
    run.deliver(n.as_ref(), started("r"), None).await;
    fake.fail_with_429(Some("sendPhoto"), 1, 7);
    let finished = RunFinished {
        status: RunStatus::Stopped,
        reason: "stop requested".into(),
        duration_s: 3.0,
        best: None,
    };
    let note = run.note(finished, Some(png()));
    let err = n.deliver(&note).await.expect_err("the photo hit the flood limit");
    assert_eq!(err.retry_after, Some(Duration::from_secs(7)));
    assert!(err.retryable);
    // The host retries after retry_after (here at once: the pacer holds the chat until then only for new sends).
    let mut retry = note.clone();
    retry.attempt = 2;
    let start = std::time::Instant::now();
    n.deliver(&retry).await.expect("the retry goes through");
    assert!(
        start.elapsed() >= Duration::from_secs(6),
        "the chat was held for retry_after: {:?}",
        start.elapsed()
    );
    let sends = fake.ok_calls_to("sendMessage").len();
    assert_eq!(sends, 2, "start and the one stop message, not twice");
    assert_eq!(fake.ok_calls_to("sendPhoto").len(), 1);
    assert_eq!(fake.ok_calls_to("editMessageText").len(), 1, "the live message edited once");
}

#[tokio::test]
async fn live_off_sends_every_notification() {
    let fake = FakeTelegram::start(&token()).await;
    let n = notifier(&fake, "live = false\nquiet_epochs = false");
    assert!(!n.capabilities().edit);
    let mut run = Run::new("run-5");
    run.deliver(n.as_ref(), started("r"), None).await;
    run.deliver(n.as_ref(), epoch(0), None).await;
    let messages = fake.bot_messages(CHAT);
    assert_eq!(messages.len(), 2);
    assert!(messages.iter().all(|m| !m.silent));
    assert!(fake.calls_to("editMessageText").is_empty());
}

/// A host with one active run whose stop requests are recorded.
struct TestHost {
    stops: Mutex<Vec<(String, String)>>,
    state: Mutex<String>,
}

impl TestHost {
    fn summary(&self) -> RunSummary {
        RunSummary {
            number: 1,
            run: "run-abc".into(),
            name: "digits-mlp".into(),
            state: self.state.lock().expect("lock").clone(),
            last_epoch: Some(epoch(1)),
            stop_requested: !self.stops.lock().expect("lock").is_empty(),
        }
    }
}

#[async_trait::async_trait]
impl Host for TestHost {
    async fn runs(&self) -> Vec<RunSummary> {
        vec![self.summary()]
    }

    async fn run(&self, key: &str) -> Result<RunDetail, HostError> {
        if key == "1" || key == "run-abc" || key == "digits-mlp" {
            let mut ctx = RunContext::new("run-abc");
            ctx.epochs.push(epoch(0));
            Ok(RunDetail { summary: self.summary(), context: ctx, plot: Some(png()) })
        } else {
            Err(HostError::NoSuchRun(key.into()))
        }
    }

    async fn request_stop(&self, key: &str, reason: &str) -> Result<RunSummary, HostError> {
        self.run(key).await?;
        self.stops.lock().expect("lock").push((key.into(), reason.into()));
        Ok(self.summary())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_from_allowed_chats_only_and_stop_with_a_button() {
    let fake = FakeTelegram::start(&token()).await;
    let n: Arc<dyn Notifier> = Arc::from(notifier(&fake, ""));
    let host = Arc::new(TestHost { stops: Mutex::new(Vec::new()), state: Mutex::new("active".into()) });
    let listener = {
        let n = n.clone();
        let host: Arc<dyn Host> = host.clone();
        tokio::spawn(async move { n.listen(host).await })
    };
    let long = Duration::from_secs(30);
    wait_until("setMyCommands", long, || fake.commands().is_some()).await;
    let commands = fake.commands().expect("registered");
    assert_eq!(
        commands.as_array().map(Vec::len),
        Some(9),
        "runs, status, stop, watch, unwatch, rules, mute, unmute, help"
    );

    fake.user_message(OTHER_CHAT, 66, "/stop 1");
    fake.user_message(OTHER_CHAT, 66, "/runs");
    fake.user_message(CHAT, 7, "/runs");
    wait_until("the /runs answer", long, || fake.bot_messages(CHAT).len() == 1).await;
    assert!(
        fake.bot_messages(CHAT)[0].text.contains("1. digits-mlp · active"),
        "{:?}",
        fake.bot_messages(CHAT)
    );

    fake.user_message(CHAT, 7, "/status@herald_test_bot");
    wait_until("the /status answer and plot", long, || fake.bot_messages(CHAT).len() == 3).await;
    let status = &fake.bot_messages(CHAT)[1];
    // /status shows the table in the notifier's layout, compact by default.
    assert!(
        status.text.ends_with("\nep  train  valid    acc  time\n 0 0.5000 0.4000 0.9000 00:05"),
        "{}",
        status.text
    );
    assert!(fake.bot_messages(CHAT)[2].photo.is_some());

    fake.user_message(CHAT, 7, "/stop 1");
    wait_until("the stop question", long, || fake.bot_messages(CHAT).len() == 4).await;
    let question = fake.bot_messages(CHAT)[3].clone();
    assert!(question.text.starts_with("Stop digits-mlp (epoch 2/3 done)?"), "{}", question.text);
    let markup = question.reply_markup.clone().expect("buttons");
    let data = markup["inline_keyboard"][0][0]["callback_data"].as_str().expect("stop button").to_owned();
    assert!(host.stops.lock().expect("lock").is_empty(), "nothing stops before the button");

    // A press from another chat does nothing.
    fake.press_button(OTHER_CHAT, question.message_id, 66, &data);
    fake.press_button(CHAT, question.message_id, 7, &data);
    wait_until("the stop request", long, || !host.stops.lock().expect("lock").is_empty()).await;
    let stops = host.stops.lock().expect("lock").clone();
    assert_eq!(stops.len(), 1);
    assert_eq!(stops[0].0, "run-abc");
    assert!(stops[0].1.contains("@user7"), "{stops:?}");
    wait_until("the question answered", long, || {
        fake.bot_messages(CHAT)[3].text.starts_with("Stop requested for digits-mlp")
    })
    .await;
    assert_eq!(fake.bot_messages(CHAT)[3].reply_markup, None, "the buttons are gone");
    assert_eq!(fake.callback_answers().len(), 1);

    *host.state.lock().expect("lock") = "stopped".into();
    wait_until("the stopped note", long, || fake.bot_messages(CHAT).len() == 5).await;
    assert_eq!(fake.bot_messages(CHAT)[4].text, "digits-mlp stopped after epoch 2/3.");
    assert!(fake.bot_messages(OTHER_CHAT).is_empty(), "no answer to another chat");
    assert_eq!(fake.pending_updates(), 0);
    listener.abort();
}

#[tokio::test]
async fn finer_progress_leaves_the_live_table_alone() {
    let fake = FakeTelegram::start(&token()).await;
    let n = notifier(&fake, "");
    let mut run = Run::new("run-6");
    run.deliver(n.as_ref(), started("r"), None).await;
    let r = run.deliver(n.as_ref(), epoch(0), None).await;
    let calls = fake.calls().len();
    let r2 = run.deliver(n.as_ref(), herald_event::EpochStarted { epoch: 1 }, None).await;
    let r3 = run.deliver(n.as_ref(), herald_event::Heartbeat {}, None).await;
    assert_eq!(fake.calls().len(), calls, "no call for an epoch start or a heartbeat");
    assert_eq!((r2.0["live"].clone(), r3.0["live"].clone()), (r.0["live"].clone(), r.0["live"].clone()));
    assert!(fake.bot_messages(CHAT)[0].text.contains("\nep  train  valid"), "the table stays");
}

#[tokio::test]
async fn table_full_is_fastais_layout() {
    let fake = FakeTelegram::start(&token()).await;
    let n = notifier(&fake, "table = 'full'");
    let mut run = Run::new("run-7");
    run.deliver(n.as_ref(), started("r"), None).await;
    run.deliver(n.as_ref(), epoch(0), None).await;
    let live = &fake.bot_messages(CHAT)[0];
    assert!(
        live.text.ends_with("\nepoch     train_loss  valid_loss  accuracy  time\n0         0.500000    0.400000    0.900000  00:05"),
        "{}",
        live.text
    );
}
