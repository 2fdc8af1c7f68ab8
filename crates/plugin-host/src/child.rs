//! One life of a plugin's child process: spawned, handshaken, then serving deliveries until it fails or the
//! notifier stops.
//!
//! [`run`] is one life; the supervisor (`supervisor.rs`) calls it again after a failure. [`Child`] holds what
//! a life needs (the process, its pipes' tasks, the deliveries in flight, the commands being relayed) and
//! has one method per kind of message: from the plugin ([`Child::on_delivered`], [`Child::on_failed`],
//! [`Child::on_command`], a violation, [`Child::on_exit`]), from the notifier ([`Child::on_request`]), the
//! delivery deadline ([`Child::hung`]) and the stop signal ([`Child::on_stop`]). The first failure ends the
//! life: [`Child::fail`] kills the child and sends what it had in flight back as retryable. It does not
//! restart anything or choose delays.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use herald_plugin::protocol::{self, HostMessage, PluginMessage};
use herald_plugin::{Capabilities, DeliveryError, Receipt};
use tokio::process::Command;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::pipes::{FromChild, Owned, exit_status, log_stderr, read_messages, write_lines};
use crate::shared::{PluginState, Request, Shared, shutting_down};

/// Commands relayed at once; a plugin sending more is flooding the host.
const MAX_COMMANDS: usize = 64;

/// How one child's life ended.
pub(crate) enum End {
    /// Shut down on request.
    Stopped,
    /// Failed; `delivered` says whether it delivered anything first (which resets the backoff).
    Failed { error: String, delivered: bool },
}

/// Why the child's loop ends.
enum Exit {
    /// The notifier stops: send `shutdown` and give the child its grace period.
    Stop,
    /// The child failed, for this reason: kill it.
    Fail(String),
}

/// What a handler returns: go on, or end the loop.
type Flow = Result<(), Exit>;

/// A delivery sent to the child and not answered yet.
struct Pending {
    reply: oneshot::Sender<Result<Receipt, DeliveryError>>,
    deadline: Instant,
    _permit: OwnedSemaphorePermit,
}

/// Start one child, shake hands, serve deliveries until it fails or the notifier stops.
pub(crate) async fn run(
    shared: &Arc<Shared>,
    requests: &mut mpsc::Receiver<Request>,
    stop: &mut watch::Receiver<bool>,
) -> End {
    shared.set_state(PluginState::Starting);
    let mut child = match Child::spawn(shared) {
        Ok(child) => child,
        Err(error) => return End::Failed { error, delivered: false },
    };
    match child.handshake(stop).await {
        Ok(()) => child.serve(requests, stop).await,
        Err(Exit::Stop) => child.stop().await,
        Err(Exit::Fail(error)) => End::Failed { error, delivered: false },
    }
}

/// A running child and what its loop keeps. See the module documentation.
struct Child {
    shared: Arc<Shared>,
    process: tokio::process::Child,
    /// What the stdout reader makes of the child's lines.
    messages: mpsc::Receiver<FromChild>,
    /// Lines for the stdin writer.
    out: mpsc::Sender<Vec<u8>>,
    /// What the plugin declared in `ready`.
    capabilities: Capabilities,
    pending: HashMap<u64, Pending>,
    /// Commands being carried out through the host.
    commands: JoinSet<()>,
    /// Whether this child delivered anything (which resets the restart backoff).
    delivered: bool,
    /// The stderr logger, the stdout reader and the stdin writer; aborted with the child.
    _pipes: [Owned; 3],
}

impl Child {
    /// Start the process and the tasks serving its pipes.
    fn spawn(shared: &Arc<Shared>) -> Result<Child, String> {
        let o = &shared.options;
        let mut command = Command::new(&o.program);
        command
            .args(&o.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // A process group of its own: Ctrl-C in the terminal reaches the host, which shuts the child down in
        // order (`shutdown`, then the grace period), instead of killing it mid-delivery.
        #[cfg(unix)]
        command.process_group(0);
        let mut process = command.spawn().map_err(|e| {
            format!("cannot start `{}`: {e}; check `command` (or the plugin's install)", o.program.display())
        })?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (process.stdin.take(), process.stdout.take(), process.stderr.take())
        else {
            return Err("the child's pipes were not set up".to_owned());
        };
        let log = Owned(tokio::spawn(log_stderr(stderr, shared.name.clone())));
        let (messages_tx, messages) = mpsc::channel(64);
        let reader = Owned(tokio::spawn(read_messages(stdout, messages_tx)));
        let (out, lines) = mpsc::channel::<Vec<u8>>(o.concurrency + 16);
        let writer = Owned(tokio::spawn(write_lines(stdin, lines)));
        Ok(Child {
            shared: shared.clone(),
            process,
            messages,
            out,
            capabilities: Capabilities::default(),
            pending: HashMap::new(),
            commands: JoinSet::new(),
            delivered: false,
            _pipes: [log, reader, writer],
        })
    }

    /// Send `hello` and wait, up to `handshake_timeout`, for `ready`.
    async fn handshake(&mut self, stop: &mut watch::Receiver<bool>) -> Flow {
        let hello = HostMessage::Hello {
            protocol: protocol::PROTOCOL.to_owned(),
            version: protocol::VERSION.to_owned(),
            name: self.shared.name.clone(),
            config: self.shared.options.config.clone(),
        };
        let hello = protocol::encode(&hello).map_err(|_| Exit::Fail("cannot encode `hello`".to_owned()))?;
        let _ = self.out.send(hello).await;
        let timeout = self.shared.options.handshake_timeout;
        let first = tokio::select! {
            first = tokio::time::timeout(timeout, self.messages.recv()) => first,
            _ = stop.changed() => return Err(Exit::Stop),
        };
        match first {
            Err(_) => Err(Exit::Fail(format!(
                "the plugin did not answer `hello` within {:.0} s (handshake_timeout)",
                timeout.as_secs_f64()
            ))),
            Ok(None) | Ok(Some(FromChild::Eof)) => {
                let status = exit_status(&mut self.process, Duration::from_secs(2)).await;
                Err(Exit::Fail(format!("the plugin exited during the handshake ({status})")))
            }
            Ok(Some(FromChild::Violation(v))) => {
                Err(Exit::Fail(format!("protocol violation during the handshake: {v}")))
            }
            Ok(Some(FromChild::Message(m))) => self.on_answer_to_hello(m),
        }
    }

    /// The plugin's first message: `ready` (with a protocol version this host speaks) or `error`.
    fn on_answer_to_hello(&mut self, message: PluginMessage) -> Flow {
        let (name, version, protocol_version, capabilities) = match message {
            PluginMessage::Ready { name, version, protocol_version, capabilities } => {
                (name, version, protocol_version, capabilities)
            }
            PluginMessage::Error { message } => {
                return Err(Exit::Fail(format!("the plugin refused to start: {message}")));
            }
            other => {
                return Err(Exit::Fail(format!(
                    "protocol violation during the handshake: it answered `hello` with `{}` instead of `ready` or \
                     `error`",
                    other.kind()
                )));
            }
        };
        let shared = &self.shared;
        if let Err(e) = protocol::check_version(&protocol_version) {
            tracing::error!(notifier = %shared.name, plugin = %name, error = %e, "plugin refused");
            return Err(Exit::Fail(format!("refused: {e}")));
        }
        let capabilities = protocol::capabilities_from(&capabilities);
        tracing::info!(
            notifier = %shared.name, plugin = %name, version = %version, protocol = %protocol_version,
            edit = capabilities.edit, image = capabilities.images, commands = capabilities.commands,
            "plugin ready"
        );
        {
            let mut stats = shared.stats();
            stats.capabilities = capabilities;
            stats.handshakes += 1;
        }
        shared.set_state(PluginState::Ready { name, version });
        self.capabilities = capabilities;
        Ok(())
    }

    /// Serve deliveries until the child fails or the notifier stops.
    async fn serve(
        mut self,
        requests: &mut mpsc::Receiver<Request>,
        stop: &mut watch::Receiver<bool>,
    ) -> End {
        let exit = loop {
            while self.commands.try_join_next().is_some() {}
            let earliest = self.pending.values().map(|p| p.deadline).min();
            let flow = tokio::select! {
                message = self.messages.recv() => self.on_message(message).await,
                request = requests.recv() => self.on_request(request).await,
                _ = sleep_until_opt(earliest) => Err(self.hung()),
                _ = stop.changed() => Err(self.on_stop()),
            };
            if let Err(exit) = flow {
                break exit;
            }
        };
        match exit {
            Exit::Stop => self.stop().await,
            Exit::Fail(failure) => self.fail(failure).await,
        }
    }

    /// What the stdout reader saw, or the end of it.
    async fn on_message(&mut self, message: Option<FromChild>) -> Flow {
        match message {
            Some(FromChild::Message(PluginMessage::Delivered { id, receipt })) => {
                self.on_delivered(&id, receipt)
            }
            Some(FromChild::Message(PluginMessage::Failed { id, message, code, retryable, retry_after })) => {
                self.on_failed(&id, protocol::delivery_error(message, code, retryable, retry_after))
            }
            Some(FromChild::Message(PluginMessage::Command { run, action, reason, id })) => {
                self.on_command(run, action, reason, id)
            }
            Some(FromChild::Message(other)) => {
                Err(Exit::Fail(format!("protocol violation: it sent `{}` after the handshake", other.kind())))
            }
            Some(FromChild::Violation(v)) => Err(Exit::Fail(format!("protocol violation: {v}"))),
            Some(FromChild::Eof) | None => self.on_exit().await,
        }
    }

    /// `delivered`: answer the delivery with the receipt.
    fn on_delivered(&mut self, id: &str, receipt: Receipt) -> Flow {
        let p = self.take(id).ok_or_else(|| {
            Exit::Fail(format!("protocol violation: it answered `delivered` for unknown id `{id}`"))
        })?;
        self.delivered = true;
        self.shared.stats().delivered += 1;
        let _ = p.reply.send(Ok(receipt));
        Ok(())
    }

    /// `failed`: answer the delivery with the plugin's error.
    fn on_failed(&mut self, id: &str, error: DeliveryError) -> Flow {
        let p = self.take(id).ok_or_else(|| {
            Exit::Fail(format!("protocol violation: it answered `failed` for unknown id `{id}`"))
        })?;
        let _ = p.reply.send(Err(error));
        Ok(())
    }

    /// `command`: relay it to the host, when the plugin declared `commands` and is not flooding the host.
    fn on_command(
        &mut self,
        run: String,
        action: String,
        reason: Option<String>,
        id: Option<String>,
    ) -> Flow {
        if !self.capabilities.commands {
            return Err(Exit::Fail(
                "protocol violation: it sent a `command` without declaring the `commands` capability"
                    .to_owned(),
            ));
        }
        if self.commands.len() >= MAX_COMMANDS {
            return Err(Exit::Fail(format!(
                "protocol violation: more than {MAX_COMMANDS} commands waiting for the host at once"
            )));
        }
        self.commands.spawn(relay(self.shared.clone(), self.out.clone(), run, action, reason, id));
        Ok(())
    }

    /// The child closed its stdout: it exited, or is made to.
    async fn on_exit(&mut self) -> Flow {
        let status = exit_status(&mut self.process, Duration::from_secs(2)).await;
        Err(Exit::Fail(format!("the plugin exited ({status})")))
    }

    /// A delivery from the notifier: send it, with its deadline; the end of requests stops the child.
    async fn on_request(&mut self, request: Option<Request>) -> Flow {
        let Some(r) = request else { return Err(Exit::Stop) };
        let deadline = Instant::now() + self.shared.options.delivery_timeout;
        self.pending.insert(r.id, Pending { reply: r.reply, deadline, _permit: r.permit });
        if self.out.send(r.line).await.is_err() {
            return Err(Exit::Fail("cannot write to the plugin's stdin".to_owned()));
        }
        Ok(())
    }

    /// A delivery passed its deadline: the plugin hangs.
    fn hung(&self) -> Exit {
        Exit::Fail(format!(
            "the plugin hangs: no answer to a delivery within {:.0} s (delivery_timeout)",
            self.shared.options.delivery_timeout.as_secs_f64()
        ))
    }

    /// The notifier stops: what is in flight is answered as cut short by shutdown.
    fn on_stop(&mut self) -> Exit {
        for (_, p) in self.pending.drain() {
            let _ = p.reply.send(Err(shutting_down()));
        }
        Exit::Stop
    }

    fn take(&mut self, id: &str) -> Option<Pending> {
        id.parse::<u64>().ok().and_then(|id| self.pending.remove(&id))
    }

    /// Kill the child after `failure`; what it had in flight fails as retryable, to be retried by the next.
    async fn fail(mut self, failure: String) -> End {
        let _ = self.process.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.process.wait()).await;
        let in_flight = self.pending.len();
        let shared = &self.shared;
        for (_, p) in self.pending.drain() {
            let _ = p.reply.send(Err(DeliveryError::retryable(format!(
                "plugin `{}` failed with the delivery in flight ({failure}); it is being restarted (restart {}) \
                 and the delivery will be retried",
                shared.name,
                shared.stats().restarts + 1
            ))
            .with_code("plugin_failed")));
        }
        if in_flight > 0 {
            tracing::info!(notifier = %shared.name, in_flight, "deliveries in flight go back to the outbox");
        }
        End::Failed { error: failure, delivered: self.delivered }
    }

    /// Send `shutdown`, wait up to `shutdown_grace` for the child to exit, then kill it.
    async fn stop(mut self) -> End {
        if let Ok(line) = protocol::encode(&HostMessage::Shutdown) {
            let _ = self.out.send(line).await;
        }
        let grace = self.shared.options.shutdown_grace;
        if tokio::time::timeout(grace, self.process.wait()).await.is_err() {
            let _ = self.process.start_kill();
            let _ = self.process.wait().await;
        }
        End::Stopped
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Carry out a plugin's command through the host and answer it when it carried an id.
async fn relay(
    shared: Arc<Shared>,
    out: mpsc::Sender<Vec<u8>>,
    run: String,
    action: String,
    reason: Option<String>,
    id: Option<String>,
) {
    let (ok, message) = match (action.as_str(), shared.host()) {
        ("stop", Some(host)) => {
            let reason = reason.unwrap_or_else(|| format!("stop requested through notifier {}", shared.name));
            match host.request_stop(&run, &reason).await {
                Ok(summary) => (true, format!("stopping run {} ({})", summary.name, summary.run)),
                Err(e) => (false, e.to_string()),
            }
        }
        ("stop", None) => (false, "this host takes no commands from notifiers".to_owned()),
        (other, _) => (false, format!("unknown action `{other}`: protocol 1.0 knows `stop`")),
    };
    tracing::info!(notifier = %shared.name, run = %run, action = %action, ok, result = %message, "plugin command");
    if let Some(id) = id
        && let Ok(line) = protocol::encode(&HostMessage::CommandResult { id, ok, message })
    {
        let _ = out.send(line).await;
    }
}
