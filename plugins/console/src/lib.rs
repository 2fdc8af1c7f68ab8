//! The `console` notifier: each notification as a block of plain text (or one JSON line) on standard error.
//!
//! It is the built-in default when no configuration exists, so a first `herald serve` or `herald watch`
//! shows something without any setup, and it is handy beside a real notifier while testing routing. It
//! writes each notification with a single `write_all` on the locked stream, so blocks from concurrent
//! deliveries never interleave. It does not colour its output or detect terminals.
//!
//! ```toml
//! [[notifier]]
//! type = "console"
//! format = "text"   # or "json": one JSON object per line
//! ```

use std::io::Write;
use std::sync::{Arc, Mutex};

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
}

/// The notifier's configuration table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// `"text"` (default) or `"json"`.
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
    const DESCRIPTION: &'static str = "prints each notification on standard error (text or JSON lines)";
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

#[async_trait::async_trait]
impl Notifier for Console {
    async fn deliver(&self, n: &Notification) -> Result<Receipt, DeliveryError> {
        let bytes = self.block(n)?;
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
    use herald_event::{EpochEnded, Event, Metrics, RunStarted};
    use herald_plugin::RunContext;
    use herald_plugin::render::notification;

    use super::*;

    fn table(text: &str) -> toml::Table {
        text.parse().expect("test tables are valid TOML")
    }

    fn sample() -> Notification {
        let started = RunStarted {
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
        };
        let ctx = RunContext::from_started("r1", &started);
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
