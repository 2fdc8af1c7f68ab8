//! The `console` notifier: each notification as a block of plain text, one JSON line, or a few plain lines on
//! standard error.
//!
//! It is the built-in default when no configuration exists, so a first `herald serve` or `herald watch`
//! shows something without any setup, and it is handy beside a real notifier while testing routing. It
//! writes each notification with a single `write_all` on the locked stream, so blocks from concurrent
//! deliveries never interleave. It does not colour its output or detect terminals: whether the terminal
//! already shows a results table is said by `format = "lines"`, which the built-in default of `herald
//! train` and `herald watch` sets (their own output shares the terminal).
//!
//! ```toml
//! [[notifier]]
//! type = "console"
//! format = "text"   # or "json": one JSON object per line; or "lines": what a table beside it does not show
//! ```

use std::io::Write;
use std::sync::{Arc, Mutex};

use herald_event::EventKind;
use herald_plugin::{ConfigError, DeliveryError, Notification, Notifier, NotifierType, Receipt};
use serde::Deserialize;

/// How a notification is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// A block: `── title ──`, the plain-text rendering, a blank line.
    #[default]
    Text,
    /// One JSON object per line: `notifier`, `run`, `seq`, `type`, `title`, `text` and the whole `event`.
    Json,
    /// For a terminal that already shows the trainer's results table (or a watched command's output): only
    /// what that output does not say, one `herald: ` line per fact (start, end, the best value, failures,
    /// alerts, messages); nothing for epochs, batches and heartbeats.
    Lines,
}

/// The notifier's configuration table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// `"text"` (default), `"json"` or `"lines"`.
    #[serde(default)]
    pub format: Format,
}

type Sink = Arc<Mutex<dyn Write + Send>>;

/// Writes notifications to standard error, or to another writer in tests.
pub struct Console {
    name: String,
    format: Format,
    /// `None`: standard error.
    sink: Option<Sink>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console").field("name", &self.name).field("format", &self.format).finish()
    }
}

impl NotifierType for ConsoleConfig {
    const KIND: &'static str = "console";
    const DESCRIPTION: &'static str = "prints each notification on standard error (text blocks, JSON lines, or lines beside a results table)";
    type Notifier = Console;

    fn build(self, name: &str) -> Result<Console, ConfigError> {
        Ok(Console::new(name, self.format))
    }
}

impl Console {
    /// A console notifier writing to standard error.
    pub fn new(name: &str, format: Format) -> Console {
        Console { name: name.to_owned(), format, sink: None }
    }

    /// A console notifier writing to `sink` instead (for tests and embedding).
    pub fn with_sink(name: &str, format: Format, sink: Arc<Mutex<dyn Write + Send>>) -> Console {
        Console { name: name.to_owned(), format, sink: Some(sink) }
    }

    /// The bytes written for one notification.
    pub fn block(&self, n: &Notification) -> Result<Vec<u8>, DeliveryError> {
        match self.format {
            Format::Text => {
                let mut out = format!("── {} ──\n", n.title);
                out.push_str(n.text.trim_end());
                out.push_str("\n\n");
                Ok(out.into_bytes())
            }
            Format::Lines => {
                let mut out = String::new();
                for line in lines(n) {
                    out.push_str("herald: ");
                    out.push_str(&line);
                    out.push('\n');
                }
                Ok(out.into_bytes())
            }
            Format::Json => {
                let value = serde_json::json!({
                    "notifier": self.name,
                    "run": n.event.run,
                    "seq": n.event.seq,
                    "type": n.event.kind().as_str(),
                    "title": n.title,
                    "text": n.text,
                    "event": n.event,
                });
                let mut line = serde_json::to_vec(&value).map_err(|e| {
                    DeliveryError::permanent(format!("cannot encode the notification as JSON: {e}"))
                })?;
                line.push(b'\n');
                Ok(line)
            }
        }
    }
}

/// What [`Format::Lines`] says about a notification: the lines of its prose (the plain text before the
/// results table) that a results table or a command's output beside it does not already show.
fn lines(n: &Notification) -> Vec<String> {
    let prose: Vec<&str> = n.text.split("\n\n").next().unwrap_or_default().lines().collect();
    let first = prose.first().copied().unwrap_or_default();
    let titled = |text: &str| if text.is_empty() { n.title.clone() } else { format!("{}: {text}", n.title) };
    match n.event.kind() {
        // The table (or the progress bar) shows these.
        EventKind::EpochStarted | EventKind::BatchEnded | EventKind::EpochEnded | EventKind::Heartbeat => {
            Vec::new()
        }
        // `name on host started (pid N)`; the epochs and hyperparameters are the trainer's own business.
        EventKind::RunStarted => vec![first.to_owned()],
        // The prose of a message or an alert is its text, then where it came from: the title says that.
        EventKind::Message | EventKind::Alert => vec![titled(first)],
        // `name on host failed after epoch 3/10: the error's first line`; the traceback is on the terminal.
        EventKind::RunFailed => match prose.get(1) {
            Some(error) => vec![format!("{first}: {error}")],
            None => vec![first.to_owned()],
        },
        // The end and the best value, stalls, losses and the job's ranks: one line per fact.
        _ => prose.iter().map(|l| (*l).to_owned()).collect(),
    }
}

#[async_trait::async_trait]
impl Notifier for Console {
    async fn deliver(&self, n: &Notification) -> Result<Receipt, DeliveryError> {
        let bytes = self.block(n)?;
        if bytes.is_empty() {
            return Ok(Receipt::none());
        }
        let written = match &self.sink {
            None => {
                let mut err = std::io::stderr().lock();
                err.write_all(&bytes).and_then(|()| err.flush())
            }
            Some(sink) => match sink.lock() {
                Ok(mut w) => w.write_all(&bytes).and_then(|()| w.flush()),
                Err(_) => {
                    return Err(DeliveryError::permanent("the console sink is poisoned by an earlier panic"));
                }
            },
        };
        written.map_err(|e| {
            DeliveryError::permanent(format!("cannot write to standard error: {e}")).with_code("io")
        })?;
        Ok(Receipt::none())
    }
}

#[cfg(test)]
mod tests {
    use herald_event::{
        Alert, Best, EpochEnded, Event, Level, Message, Metrics, Payload, RunFailed, RunFinished, RunStarted,
        RunStatus,
    };
    use herald_plugin::RunContext;
    use herald_plugin::render::notification;

    use super::*;

    fn table(text: &str) -> toml::Table {
        text.parse().expect("test tables are valid TOML")
    }

    fn started() -> RunStarted {
        RunStarted {
            name: "digits".into(),
            host: "box".into(),
            pid: 1,
            rank: 0,
            job: None,
            world_size: None,
            n_epochs: 2,
            batches_per_epoch: 10,
            metric_names: vec!["accuracy".into()],
            hyper: Default::default(),
        }
    }

    fn sample() -> Notification {
        let ctx = RunContext::from_started("r1", &started());
        let epoch = EpochEnded {
            epoch: 0,
            n_epochs: 2,
            train_loss: 0.5,
            valid_loss: Some(0.25),
            metrics: Metrics(vec![("accuracy".into(), 0.9)]),
            elapsed_s: 3.0,
        };
        notification(&ctx, &Event::now("r1", 1, epoch), None, None, 1)
    }

    fn deliver_to_buffer(format: Format, n: &Notification, times: usize) -> String {
        let buffer = Arc::new(Mutex::new(Vec::<u8>::new()));
        let console = Console::with_sink("term", format, buffer.clone());
        let rt =
            tokio::runtime::Builder::new_current_thread().build().expect("a current-thread runtime builds");
        for _ in 0..times {
            rt.block_on(console.deliver(n)).expect("writing to a buffer succeeds");
        }
        let bytes = buffer.lock().expect("no test panicked while holding the buffer").clone();
        String::from_utf8(bytes).expect("the console writes UTF-8")
    }

    #[test]
    fn text_blocks() {
        let n = sample();
        let out = deliver_to_buffer(Format::Text, &n, 2);
        let block = "── digits: epoch 1/2 ──\n\
                     epoch 1/2 · train 0.500000 · valid 0.250000 · accuracy 0.900000 · 00:03\n\
                     digits on box\n\n\
                     epoch     train_loss  valid_loss  accuracy  time\n\
                     0         0.500000    0.250000    0.900000  00:03\n\n";
        assert_eq!(out, format!("{block}{block}"));
    }

    #[test]
    fn lines_say_only_what_a_results_table_beside_them_does_not() {
        let mut ctx = RunContext::from_started("r1", &started());
        let mut check = |payload: Payload, expected: &str| {
            let event = Event::now("r1", 1, payload);
            let n = notification(&ctx, &event, None, None, 1);
            ctx.apply(&event);
            let kind = event.kind();
            assert_eq!(deliver_to_buffer(Format::Lines, &n, 1), expected, "{kind:?}");
        };
        check(started().into(), "herald: digits on box started (pid 1)\n");
        check(sample().event.payload, "");
        check(
            RunFinished {
                status: RunStatus::Completed,
                reason: "all epochs done".into(),
                duration_s: 65.0,
                best: Some(Best { name: "accuracy".into(), value: 0.9, epoch: 0 }),
            }
            .into(),
            "herald: digits on box completed after 01:05 (epoch 1/2): all epochs done\n\
             herald: best accuracy 0.900000 at epoch 1\n",
        );
        check(
            RunFailed { error: "loss is NaN\nat batch 3".into(), traceback: Some("Traceback\n  x".into()) }
                .into(),
            "herald: digits on box failed after epoch 1/2: loss is NaN\n",
        );
        check(
            Alert {
                rule: Some("plateau".into()),
                title: "valid_loss flat".into(),
                text: "no better valid_loss for 3 epochs".into(),
                level: Level::Warning,
                epoch: Some(0),
            }
            .into(),
            "herald: warning: digits: valid_loss flat: no better valid_loss for 3 epochs\n",
        );
        check(
            Message { title: "checkpoint".into(), text: "saved".into(), level: Level::Info }.into(),
            "herald: checkpoint: saved\n",
        );
        let text = deliver_to_buffer(Format::Lines, &sample(), 3);
        assert!(!text.contains("train_loss"), "never the table: {text}");
    }

    #[test]
    fn json_lines() {
        let n = sample();
        let out = deliver_to_buffer(Format::Json, &n, 2);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2);
        let v: serde_json::Value = serde_json::from_str(lines[0]).expect("each line is JSON");
        assert_eq!(v["notifier"], "term");
        assert_eq!(v["run"], "r1");
        assert_eq!(v["seq"], 1);
        assert_eq!(v["type"], "epoch_ended");
        assert_eq!(v["title"], "digits: epoch 1/2");
        assert_eq!(v["event"]["train_loss"], 0.5);
        assert_eq!(v["text"].as_str().map(|t| t.contains("train_loss")), Some(true));
    }

    #[test]
    fn config() {
        fn build(text: &str) -> Result<Box<dyn Notifier>, ConfigError> {
            ConsoleConfig::from_table("c", table(text))
        }
        assert_eq!(build("").map(|n| n.kind().to_owned()), Ok("console".to_owned()));
        assert!(build("format = 'json'").is_ok());
        assert!(build("format = 'lines'").is_ok());
        let err = build("format = 'xml'").err().expect("xml is not a format");
        assert_eq!(err.key.as_deref(), Some("format"), "{err}");
        assert!(err.message.contains("unknown variant `xml`"), "{err}");
        let err = build("colour = true").err().expect("unknown key");
        assert_eq!(err.key.as_deref(), Some("colour"), "{err}");
        assert_eq!(err.to_string(), "colour: unknown key; expected `format`");
        let console = build("").expect("the default table is valid");
        assert_eq!(console.capabilities(), herald_plugin::Capabilities::default());
    }
}
