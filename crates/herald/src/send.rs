//! `herald send`: one `message` event (`--title`/`--text`) or events from a file (`--event FILE|-`), to the
//! daemon, or with `--direct` straight through the configured notifiers (no daemon), printing each
//! notifier's result.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use herald_event::{Event, Level, Message};
use herald_plugin::{RunContext, render};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LevelArg {
    Info,
    Warning,
    Error,
}

/// Send a message (or events from a file) to your notifiers.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The message's title.
    #[arg(long, conflicts_with = "event")]
    pub title: Option<String>,
    /// The message's text.
    #[arg(long, conflicts_with = "event")]
    pub text: Option<String>,
    /// Severity of the message.
    #[arg(long, value_enum, default_value = "info", conflicts_with = "event")]
    pub level: LevelArg,
    /// Send the events in FILE (one event, a JSON array or NDJSON); `-` reads standard input.
    #[arg(long, value_name = "FILE|-")]
    pub event: Option<PathBuf>,
    /// Deliver through the configured notifiers from this process instead of the daemon.
    #[arg(long)]
    pub direct: bool,
}

fn events(args: &Args) -> Result<Vec<Event>> {
    if let Some(path) = &args.event {
        let mut bytes = Vec::new();
        if path.as_os_str() == "-" {
            std::io::stdin().read_to_end(&mut bytes).context("cannot read standard input")?;
        } else {
            bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        }
        let where_ =
            if path.as_os_str() == "-" { "standard input".to_owned() } else { path.display().to_string() };
        return herald_event::decode_batch(&bytes).with_context(|| format!("{where_} holds no valid events"));
    }
    if args.title.is_none() && args.text.is_none() {
        bail!("nothing to send: give --title and/or --text, or --event FILE");
    }
    let level = match args.level {
        LevelArg::Info => Level::Info,
        LevelArg::Warning => Level::Warning,
        LevelArg::Error => Level::Error,
    };
    let title = args.title.clone().unwrap_or_else(|| "herald".to_owned());
    let text = args.text.clone().unwrap_or_default();
    // A run id of its own, so that the daemon never takes two messages for duplicates.
    let run = format!("send-{}", herald_daemon::now_ms());
    Ok(vec![Event::now(run, 0, Message { title, text, level })])
}

pub fn run(config_path: Option<&Path>, args: Args) -> Result<()> {
    let config = crate::serve::load_config(config_path)?;
    let events = events(&args)?;
    let runtime = crate::serve::runtime()?;
    if args.direct {
        return runtime.block_on(direct(&config, events));
    }
    let client = crate::serve::client(&config, Duration::from_secs(30))?;
    let mut body = String::new();
    for e in &events {
        body.push_str(&herald_event::encode_event(e)?);
        body.push('\n');
    }
    let reply = runtime.block_on(client.post_events(body.into_bytes())).map_err(|e| {
        if herald_daemon::forwarder::is_unreachable(&e) {
            anyhow::anyhow!("{e}; or deliver without a daemon: herald send --direct")
        } else {
            anyhow::anyhow!("{e}")
        }
    })?;
    println!("the daemon at {} accepted {} event(s)", client.base(), reply.accepted);
    Ok(())
}

/// Deliver each event through every configured notifier that routes it, concurrently, and print the results.
async fn direct(config: &herald_daemon::config::Config, events: Vec<Event>) -> Result<()> {
    let registry = herald_daemon::builtins::registry();
    let notifiers = herald_daemon::build_notifiers(config, &registry)?;
    if notifiers.is_empty() {
        bail!("no notifiers configured in {}", config.origin);
    }
    let mut failed = 0;
    let mut context = RunContext::default();
    let mut state = herald_daemon::runs::RunState::default();
    let notifiers: Vec<Direct> = notifiers
        .into_iter()
        .map(|s| Direct { name: s.name, kind: s.kind, routing: s.routing, notifier: Arc::from(s.notifier) })
        .collect();
    for event in events {
        if context.run != event.run {
            context = RunContext::new(&event.run);
            state = herald_daemon::runs::RunState::new(&event.run);
        }
        let notification = render::notification(&context, &event, None, None, 1);
        let mut tasks = tokio::task::JoinSet::new();
        for (i, spec) in notifiers.iter().enumerate() {
            if !herald_daemon::runs::accepts(&spec.routing, &state, &event) {
                println!(
                    "{} ({}): skipped: its `events` do not include {}",
                    spec.name,
                    spec.kind,
                    event.kind()
                );
                continue;
            }
            let (n, notification, timeout) =
                (spec.notifier.clone(), notification.clone(), spec.routing.timeout);
            tasks.spawn(async move {
                let t0 = Instant::now();
                let r = herald_daemon::deliver_with_timeout(n, notification, timeout).await;
                (i, r, t0.elapsed())
            });
        }
        let mut results = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            if let Ok(r) = joined {
                results.push(r);
            }
        }
        results.sort_by_key(|r| r.0);
        for (i, result, took) in results {
            let spec = &notifiers[i];
            match result {
                Ok(_) => println!("{} ({}): ok in {} ms", spec.name, spec.kind, took.as_millis()),
                Err(e) => {
                    failed += 1;
                    println!("{} ({}): failed: {e}", spec.name, spec.kind);
                }
            }
        }
        context.apply(&event);
        state.apply(&event, false, herald_daemon::now_ms());
    }
    if failed > 0 {
        bail!("{failed} delivery(ies) failed");
    }
    Ok(())
}

/// A notifier to deliver to directly.
struct Direct {
    name: String,
    kind: String,
    routing: herald_daemon::config::Routing,
    notifier: Arc<dyn herald_plugin::Notifier>,
}
