//! The plugin side of the protocol: [`serve`](fn@serve) runs any [`Notifier`] as an out-of-process plugin.
//!
//! A Rust plugin is a binary whose `main` calls [`serve_type`] (a [`NotifierType`] built from the
//! `[[notifier]]` table the host sends in `hello`, exactly as the registry builds a built-in) or
//! [`serve`](fn@serve) (a notifier configured by other means): so a Rust author writes the same type in
//! process or out of it, and every built-in could run out of process. It reads host messages from stdin,
//! answers on stdout and logs to stderr (the host tags those lines with the notifier's name). Deliveries run
//! concurrently, each answered with its `id`; a malformed line is logged and skipped, never fatal; `shutdown`
//! or the end of stdin ends [`serve`](fn@serve) once what is in flight has been answered. Everything runs in
//! the caller's task (deliveries, the command listener and the writer are polled side by side, not spawned),
//! so the SDK needs no runtime of its own; the plugin's `main` brings one (`#[tokio::main]`). The host side
//! (supervision, restarts, timeouts) is not here: it is `herald-plugin-host`.

use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use futures_util::StreamExt as _;
use futures_util::future::{Either, select};
use futures_util::stream::FuturesUnordered;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};

use crate::config::ConfigError;
use crate::host::{Host, HostError, RunDetail, RunSummary};
use crate::notifier::{DeliveryError, Notifier};
use crate::notifier_type::NotifierType;
use crate::protocol::{self, HostMessage, MAX_LINE, PluginMessage};

/// How long a relayed command waits for the host's `command_result`.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// Commands waiting for their `command_result`, by id: (ok, message).
type Waiting = Arc<Mutex<HashMap<String, oneshot::Sender<(bool, String)>>>>;

/// Work in flight beside the reading of host lines: a delivery and the sending of its answer.
type InFlight = FuturesUnordered<Pin<Box<dyn Future<Output = ()> + Send>>>;

/// Why [`serve`](fn@serve) ended early.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Reading from stdin or writing to stdout failed.
    #[error("cannot talk to the host over stdin/stdout: {0}")]
    Io(#[from] std::io::Error),
    /// The host's first line was not a valid `hello` (or spoke another major version).
    #[error("the host broke the handshake: {0}")]
    Handshake(String),
    /// The notifier's table in `hello` was rejected.
    #[error("the notifier's configuration is invalid: {0}")]
    Config(#[from] ConfigError),
}

/// What one line read with [`read_line`] turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A line is in the buffer (without its newline).
    Line,
    /// The line was longer than the limit; it was read to its end and dropped.
    TooLong,
    /// The stream ended (a last line without a newline counts as a line first).
    Eof,
}

/// Read one `\n`-terminated line into `buf` (cleared first), holding at most `max` bytes of it.
pub async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Line> {
    buf.clear();
    let mut too_long = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(match (too_long, buf.is_empty()) {
                (true, _) => Line::TooLong,
                (false, true) => Line::Eof,
                (false, false) => Line::Line,
            });
        }
        let (chunk, done) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (&available[..i], Some(i + 1)),
            None => (available, None),
        };
        if !too_long {
            if buf.len() + chunk.len() > max {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        let used = done.unwrap_or(available.len());
        reader.consume(used);
        if done.is_some() {
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            return Ok(if too_long { Line::TooLong } else { Line::Line });
        }
    }
}

/// Run `notifier` as a plugin on stdin and stdout until the host says `shutdown` or closes stdin.
///
/// The notifier is configured already (from flags or the environment), so `hello` must carry an empty table;
/// use [`serve_type`] to be configured by the host. Call it from a tokio runtime
/// (`#[tokio::main]`).
pub async fn serve(notifier: impl Notifier + 'static) -> Result<(), ServeError> {
    let notifier: Arc<dyn Notifier> = Arc::new(notifier);
    let version = String::new();
    serve_io(tokio::io::stdin(), tokio::io::stdout(), version, move |_, table| match table.keys().next() {
        Some(key) => Err(ConfigError::for_key(
            key.clone(),
            "this plugin takes no configuration keys from the host; remove it from the [[notifier]] table",
        )),
        None => Ok(notifier),
    })
    .await
}

/// Run a notifier of type `T`, built from the host's `hello` table as the registry builds a built-in
/// ([`NotifierType::from_table`]: unknown keys refused by name), as plugin `version`, on stdin and stdout.
/// Call it from a tokio runtime: `herald_plugin::serve_type::<GotifyConfig>(env!("CARGO_PKG_VERSION"))`.
pub async fn serve_type<T: NotifierType>(version: &str) -> Result<(), ServeError> {
    serve_io(tokio::io::stdin(), tokio::io::stdout(), version.to_owned(), |name, table| {
        T::from_table(name, table).map(Arc::from)
    })
    .await
}

/// [`serve`](fn@serve) over any reader and writer: `build` turns the notifier's name and table into the notifier.
pub async fn serve_io<R, W, B>(reader: R, writer: W, version: String, build: B) -> Result<(), ServeError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
    B: FnOnce(&str, toml::Table) -> Result<Arc<dyn Notifier>, ConfigError>,
{
    let mut reader = BufReader::with_capacity(64 * 1024, reader);
    let mut writer = writer;
    let mut buf = Vec::with_capacity(4096);
    // The handshake: the first line must be `hello`.
    let hello = match read_line(&mut reader, &mut buf, MAX_LINE).await? {
        Line::Eof => return Ok(()),
        Line::TooLong => Err("the first line is longer than 1 MiB".to_owned()),
        Line::Line => match serde_json::from_slice::<HostMessage>(&buf) {
            Ok(HostMessage::Hello { protocol, version, name, config }) => {
                Ok((protocol, version, name, config))
            }
            Ok(_) => Err("the first message is not `hello`".to_owned()),
            Err(e) => Err(format!("the first line is not a `hello` message: {e}")),
        },
    };
    let (proto, host_version, name, config) = match hello {
        Ok(h) => h,
        Err(message) => {
            refuse(&mut writer, &message).await?;
            return Err(ServeError::Handshake(message));
        }
    };
    if proto != protocol::PROTOCOL {
        let message = format!("expected protocol `{}`, the host speaks `{proto}`", protocol::PROTOCOL);
        refuse(&mut writer, &message).await?;
        return Err(ServeError::Handshake(message));
    }
    if let Err(e) = protocol::check_version(&host_version) {
        let message = e
            .to_string()
            .replace("the plugin speaks", "the host speaks")
            .replace("this herald speaks", "this plugin speaks");
        refuse(&mut writer, &message).await?;
        return Err(ServeError::Handshake(message));
    }
    let table: Result<toml::Table, ConfigError> = match config {
        serde_json::Value::Null => Ok(toml::Table::new()),
        other => serde_json::from_value(other)
            .map_err(|e| ConfigError::new(format!("the configuration is not a table of TOML values: {e}"))),
    };
    let notifier = match table.and_then(|t| build(&name, t)) {
        Ok(n) => n,
        Err(e) => {
            refuse(&mut writer, &e.to_string()).await?;
            return Err(ServeError::Config(e));
        }
    };
    let capabilities = notifier.capabilities();
    let ready = PluginMessage::Ready {
        name: notifier.kind().to_owned(),
        version,
        protocol_version: protocol::VERSION.to_owned(),
        capabilities: protocol::capability_words(capabilities),
    };
    writer.write_all(&encode(&ready)).await?;
    writer.flush().await?;

    let (out, lines) = mpsc::channel::<Vec<u8>>(256);
    let commands: Waiting = Arc::default();
    let host = capabilities.commands.then(|| {
        Arc::new(RemoteHost { out: out.clone(), waiting: commands.clone(), next: AtomicU64::new(1) })
    });
    let mut writing = pin!(write_lines(writer, lines));
    let talking = pin!(talk(reader, buf, notifier, out, commands, host));
    // The writer runs beside the session; it ends early only when stdout fails.
    let talked = match select(talking, writing.as_mut()).await {
        Either::Left((talked, _)) => talked,
        Either::Right((written, talking)) => {
            written?;
            talking.await
        }
    };
    talked?;
    // The session dropped every sender, so the writer ends once it has written what is queued.
    if let Ok(result) = tokio::time::timeout(Duration::from_secs(5), writing).await {
        result?;
    }
    Ok(())
}

/// The session after the handshake: read host lines until `shutdown` or the end of input, deliver
/// concurrently, relay command results to the listener, then wait for the deliveries in flight.
async fn talk<R: AsyncBufRead + Unpin>(
    mut reader: R,
    mut buf: Vec<u8>,
    notifier: Arc<dyn Notifier>,
    out: mpsc::Sender<Vec<u8>>,
    commands: Waiting,
    host: Option<Arc<RemoteHost>>,
) -> std::io::Result<()> {
    let listener = notifier.clone();
    // Never completes: a listener that stops is logged, and the session goes on without it.
    let mut listening = pin!(async move {
        if let Some(host) = host
            && let Err(e) = listener.listen(host).await
        {
            log(&format!("listening for commands stopped: {e}"));
        }
        std::future::pending::<()>().await
    });
    let mut deliveries = InFlight::new();
    loop {
        let read = read_line(&mut reader, &mut buf, MAX_LINE);
        match beside(read, &mut deliveries, listening.as_mut()).await? {
            Line::Eof => break,
            Line::TooLong => {
                log("ignoring a line from the host longer than 1 MiB");
                continue;
            }
            Line::Line => {}
        }
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let value: serde_json::Value = match serde_json::from_slice(&buf) {
            Ok(v) => v,
            Err(e) => {
                log(&format!("ignoring a line from the host that is not JSON: {e}"));
                continue;
            }
        };
        let kind = value.get("type").and_then(|t| t.as_str()).unwrap_or("").to_owned();
        let id = value.get("id").and_then(|t| t.as_str()).map(str::to_owned);
        match serde_json::from_value::<HostMessage>(value) {
            Ok(HostMessage::Deliver { id, notification }) => {
                let notifier = notifier.clone();
                let out = out.clone();
                deliveries.push(Box::pin(async move {
                    let answer = match notifier.deliver(&notification).await {
                        Ok(receipt) => PluginMessage::Delivered { id, receipt },
                        Err(err) => PluginMessage::failed(id, &err),
                    };
                    let _ = out.send(encode(&answer)).await;
                }));
            }
            Ok(HostMessage::CommandResult { id, ok, message }) => {
                let waiter = commands.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&id);
                match waiter {
                    Some(tx) => {
                        let _ = tx.send((ok, message));
                    }
                    None => log(&format!("ignoring a command_result for unknown command `{id}`")),
                }
            }
            Ok(HostMessage::Shutdown) => break,
            Ok(HostMessage::Hello { .. }) => log("ignoring a second `hello`"),
            Err(e) => match (kind.as_str(), id) {
                // A delivery we cannot read is answered, so the host does not wait for it.
                ("deliver", Some(id)) => {
                    let err = DeliveryError::permanent(format!(
                        "the plugin cannot read this notification ({e}): the host and plugin disagree on \
                         the protocol; upgrade the older one"
                    ))
                    .with_code("decode");
                    let out = out.clone();
                    deliveries.push(Box::pin(async move {
                        let _ = out.send(encode(&PluginMessage::failed(id, &err))).await;
                    }));
                }
                _ => log(&format!("ignoring a message from the host that does not fit the protocol: {e}")),
            },
        }
    }
    let drained = poll_fn(|cx| {
        while let Poll::Ready(Some(())) = deliveries.poll_next_unpin(cx) {}
        if deliveries.is_empty() { Poll::Ready(()) } else { Poll::Pending }
    });
    beside(drained, &mut InFlight::new(), listening).await;
    // Returning drops the listener (and the remote host's sender with it) and every pending command.
    commands.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
    Ok(())
}

/// Await `work` while also driving the deliveries in flight and the command listener, all in this task.
async fn beside<T>(
    work: impl Future<Output = T>,
    deliveries: &mut InFlight,
    mut listening: Pin<&mut impl Future<Output = ()>>,
) -> T {
    let mut work = pin!(work);
    poll_fn(|cx| {
        while let Poll::Ready(Some(())) = deliveries.poll_next_unpin(cx) {}
        // The listener never completes, so polling it again is always allowed.
        let _ = listening.as_mut().poll(cx);
        work.as_mut().poll(cx)
    })
    .await
}

fn encode(message: &PluginMessage) -> Vec<u8> {
    protocol::encode(message).unwrap_or_else(|e| {
        // Only a receipt could fail to encode (a map with non-string keys cannot come from JSON); answer
        // with an error the host can act on rather than nothing.
        let fallback = PluginMessage::Error { message: format!("cannot encode an answer: {e}") };
        protocol::encode(&fallback).unwrap_or_default()
    })
}

async fn refuse<W: AsyncWrite + Unpin>(writer: &mut W, message: &str) -> std::io::Result<()> {
    log(&format!("refusing the handshake: {message}"));
    writer.write_all(&encode(&PluginMessage::Error { message: message.to_owned() })).await?;
    writer.flush().await
}

/// Write lines as they come, flushing when none is waiting (so a burst shares one flush).
async fn write_lines<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut lines: mpsc::Receiver<Vec<u8>>,
) -> std::io::Result<()> {
    while let Some(line) = lines.recv().await {
        writer.write_all(&line).await?;
        while let Ok(line) = lines.try_recv() {
            writer.write_all(&line).await?;
        }
        writer.flush().await?;
    }
    writer.flush().await
}

/// A log line on stderr, the plugin's log channel (the host tags it with the notifier's name).
fn log(message: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "{message}");
}

/// The host as a plugin's [`Notifier::listen`] sees it: commands go out as `command` lines.
struct RemoteHost {
    out: mpsc::Sender<Vec<u8>>,
    waiting: Waiting,
    next: AtomicU64,
}

#[async_trait::async_trait]
impl Host for RemoteHost {
    /// Protocol 1.0 does not carry run lists to plugins.
    async fn runs(&self) -> Vec<RunSummary> {
        Vec::new()
    }

    async fn run(&self, key: &str) -> Result<RunDetail, HostError> {
        Err(HostError::Other(format!(
            "cannot show run `{key}`: plugin protocol 1.0 does not carry runs to out-of-process plugins"
        )))
    }

    async fn request_stop(&self, key: &str, reason: &str) -> Result<RunSummary, HostError> {
        let id = format!("c{}", self.next.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id.clone(), tx);
        let command = PluginMessage::Command {
            run: key.to_owned(),
            action: "stop".to_owned(),
            reason: Some(reason.to_owned()).filter(|r| !r.is_empty()),
            id: Some(id.clone()),
        };
        if self.out.send(encode(&command)).await.is_err() {
            return Err(HostError::Other("the host has gone away".into()));
        }
        let answer = tokio::time::timeout(COMMAND_TIMEOUT, rx).await;
        self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&id);
        match answer {
            Ok(Ok((true, _))) => Ok(RunSummary {
                number: 0,
                run: key.to_owned(),
                name: key.to_owned(),
                state: "active".to_owned(),
                last_epoch: None,
                stop_requested: true,
            }),
            Ok(Ok((false, message))) => Err(HostError::Other(message)),
            Ok(Err(_)) | Err(_) => Err(HostError::Other("the host did not answer the stop request".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncWriteExt, DuplexStream};

    use super::*;
    use crate::{Capabilities, Notification, Receipt};

    #[tokio::test]
    async fn read_line_limits_and_splits() {
        let data = b"short\r\n0123456789\nlast".to_vec();
        let mut reader = BufReader::with_capacity(4, &data[..]);
        let mut buf = Vec::new();
        assert_eq!(read_line(&mut reader, &mut buf, 8).await.expect("reads"), Line::Line);
        assert_eq!(buf, b"short");
        assert_eq!(read_line(&mut reader, &mut buf, 8).await.expect("reads"), Line::TooLong);
        assert_eq!(read_line(&mut reader, &mut buf, 8).await.expect("reads"), Line::Line);
        assert_eq!(buf, b"last");
        assert_eq!(read_line(&mut reader, &mut buf, 8).await.expect("reads"), Line::Eof);
    }

    /// Fails the delivery of seq 1, panics on nothing, takes commands.
    struct Echo;

    #[async_trait::async_trait]
    impl Notifier for Echo {
        fn kind(&self) -> &str {
            "echo"
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities { edit: true, images: false, commands: false }
        }
        async fn deliver(&self, n: &Notification) -> Result<Receipt, DeliveryError> {
            if n.event.seq == 1 {
                return Err(DeliveryError::retryable("busy").with_retry_after(Duration::from_secs(2)));
            }
            Ok(Receipt(serde_json::json!({ "seq": n.event.seq })))
        }
    }

    fn deliver_line(id: &str, seq: u64) -> Vec<u8> {
        let event = herald_event::Event::now(
            "r",
            seq,
            herald_event::Message { title: "t".into(), text: "x".into(), level: Default::default() },
        );
        let n = crate::render::notification(&crate::RunContext::new("r"), &event, None, None, 1);
        protocol::encode(&HostMessage::Deliver { id: id.into(), notification: Box::new(n) }).expect("encodes")
    }

    async fn answers(mut host: DuplexStream, input: Vec<u8>) -> Vec<serde_json::Value> {
        host.write_all(&input).await.expect("writes");
        host.shutdown().await.expect("closes");
        let mut reader = BufReader::new(host);
        let mut out = Vec::new();
        let mut buf = Vec::new();
        while read_line(&mut reader, &mut buf, MAX_LINE).await.expect("reads") == Line::Line {
            out.push(serde_json::from_slice(&buf).expect("the plugin writes JSON lines"));
        }
        out
    }

    fn hello(version: &str, config: serde_json::Value) -> Vec<u8> {
        protocol::encode(&HostMessage::Hello {
            protocol: protocol::PROTOCOL.into(),
            version: version.into(),
            name: "e".into(),
            config,
        })
        .expect("encodes")
    }

    #[tokio::test]
    async fn handshake_deliveries_garbage_and_shutdown() {
        let (host, plugin) = tokio::io::duplex(1 << 16);
        let (read, write) = tokio::io::split(plugin);
        let served = tokio::spawn(serve_io(read, write, "9.9".into(), |_, _| Ok(Arc::new(Echo) as _)));
        let mut input = hello("1.3", serde_json::json!({}));
        input.extend(deliver_line("a", 0));
        input.extend(b"this is not json\n{\"type\":\"deliver\",\"id\":\"bad\",\"notification\":3}\n");
        input.extend(deliver_line("b", 1));
        input.extend(b"{\"type\":\"shutdown\"}\n");
        let got = answers(host, input).await;
        served.await.expect("serve does not panic").expect("serve ends cleanly");
        assert_eq!(got[0]["type"], "ready");
        assert_eq!(got[0]["name"], "echo");
        assert_eq!(got[0]["version"], "9.9");
        assert_eq!(got[0]["capabilities"], serde_json::json!(["edit"]));
        let by_id = |id: &str| got.iter().find(|m| m["id"] == id).cloned().expect("answered");
        assert_eq!(by_id("a")["type"], "delivered");
        assert_eq!(by_id("a")["receipt"], serde_json::json!({"seq": 0}));
        assert_eq!(by_id("b")["type"], "failed");
        assert_eq!(by_id("b")["retry_after"], 2.0);
        assert_eq!(by_id("bad")["type"], "failed");
        assert_eq!(by_id("bad")["retryable"], false);
        assert_eq!(got.len(), 4);
    }

    /// Takes commands: its listener asks the host to stop run `2` and keeps the answer.
    struct Chat {
        answer: Arc<Mutex<Option<Result<RunSummary, HostError>>>>,
    }

    #[async_trait::async_trait]
    impl Notifier for Chat {
        fn kind(&self) -> &str {
            "chat"
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities { edit: false, images: false, commands: true }
        }
        async fn deliver(&self, _: &Notification) -> Result<Receipt, DeliveryError> {
            Ok(Receipt::none())
        }
        async fn listen(&self, host: Arc<dyn Host>) -> Result<(), DeliveryError> {
            let answer = host.request_stop("2", "from the phone").await;
            *self.answer.lock().expect("not poisoned") = Some(answer);
            std::future::pending().await
        }
    }

    #[tokio::test]
    async fn commands_go_out_and_their_results_come_back() {
        let answer: Arc<Mutex<Option<Result<RunSummary, HostError>>>> = Arc::default();
        let chat = Arc::new(Chat { answer: answer.clone() });
        let (host, plugin) = tokio::io::duplex(1 << 16);
        let (read, write) = tokio::io::split(plugin);
        let served = tokio::spawn(serve_io(read, write, String::new(), move |_, _| Ok(chat as _)));
        let (host_read, mut host_write) = tokio::io::split(host);
        let mut lines = BufReader::new(host_read);
        let mut buf = Vec::new();
        host_write.write_all(&hello("1.0", serde_json::Value::Null)).await.expect("writes");
        let mut next = async || {
            assert_eq!(read_line(&mut lines, &mut buf, MAX_LINE).await.expect("reads"), Line::Line);
            serde_json::from_slice::<serde_json::Value>(&buf).expect("JSON")
        };
        assert_eq!(next().await["capabilities"], serde_json::json!(["commands"]));
        let command = next().await;
        assert_eq!(command["type"], "command");
        assert_eq!(
            (&command["run"], &command["action"], &command["reason"]),
            (&"2".into(), &"stop".into(), &"from the phone".into())
        );
        let id = command["id"].as_str().expect("an id").to_owned();
        let result = HostMessage::CommandResult { id, ok: false, message: "no run matches `2`".into() };
        host_write.write_all(&protocol::encode(&result).expect("encodes")).await.expect("writes");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let got = loop {
            if let Some(got) = answer.lock().expect("not poisoned").clone() {
                break got;
            }
            assert!(std::time::Instant::now() < deadline, "the listener never got its answer");
            tokio::task::yield_now().await;
        };
        assert_eq!(got, Err(HostError::Other("no run matches `2`".into())));
        host_write.write_all(b"{\"type\":\"shutdown\"}\n").await.expect("writes");
        served.await.expect("no panic").expect("clean end");
    }

    #[tokio::test]
    async fn refuses_another_major_and_bad_config() {
        let (host, plugin) = tokio::io::duplex(1 << 16);
        let (read, write) = tokio::io::split(plugin);
        let served = tokio::spawn(serve_io(read, write, String::new(), |_, _| Ok(Arc::new(Echo) as _)));
        let got = answers(host, hello("2.0", serde_json::Value::Null)).await;
        assert!(served.await.expect("no panic").is_err());
        assert_eq!(got[0]["type"], "error");
        let message = got[0]["message"].as_str().expect("a message");
        assert!(message.contains("the host speaks herald-plugin protocol 2.0"), "{message}");

        let (host, plugin) = tokio::io::duplex(1 << 16);
        let (read, write) = tokio::io::split(plugin);
        let served =
            tokio::spawn(serve_io(read, write, String::new(), |_, t: toml::Table| match t.keys().next() {
                Some(k) => Err(ConfigError::unknown_key(k, &["url"])),
                None => Ok(Arc::new(Echo) as _),
            }));
        let got = answers(host, hello("1.0", serde_json::json!({"urll": "x"}))).await;
        assert!(matches!(served.await.expect("no panic"), Err(ServeError::Config(_))));
        assert_eq!(got[0]["type"], "error");
        assert_eq!(got[0]["message"], "urll: unknown key; expected one of `url`");
    }
}
