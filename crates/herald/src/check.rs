//! `herald check [--send-test]`: validate the configuration, build every notifier, ask each for its health,
//! and with `--send-test` send a test message through each and print a result table.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use herald_event::{Event, Level, Message};
use herald_plugin::{Health, RunContext, render};

/// Check the configuration and the notifiers.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Also send a test message through each notifier.
    #[arg(long)]
    pub send_test: bool,
}

pub fn run(config_path: Option<&Path>, args: Args) -> Result<()> {
    let config = crate::serve::load_config(config_path)?;
    let d = &config.daemon;
    println!("configuration: {}", config.origin);
    println!(
        "daemon: listen {}{}, socket {}, state {}, stall after {} s",
        d.listen,
        if d.token.is_some() { " (token set)" } else { "" },
        d.socket.as_ref().map_or_else(|| "none".to_owned(), |p| p.display().to_string()),
        d.state_dir.display(),
        d.stall_after.as_secs()
    );
    if let Err(e) = herald_daemon::check_listen(&config) {
        bail!("{e}");
    }
    let registry = herald_daemon::builtins::registry();
    let mut problems = 0;
    let mut built = Vec::new();
    for n in &config.notifiers {
        match n.build(&registry) {
            Ok(notifier) => built.push((n, Arc::<dyn herald_plugin::Notifier>::from(notifier))),
            Err(e) => {
                problems += 1;
                println!("{} ({}): configuration error: {e}", n.name, n.kind);
            }
        }
    }
    let runtime = crate::serve::runtime()?;
    let rows = runtime.block_on(async {
        let mut rows = Vec::new();
        for (n, notifier) in &built {
            let health = match tokio::time::timeout(Duration::from_secs(10), notifier.health_check()).await {
                Ok(Health::Ok) => "ok".to_owned(),
                Ok(Health::Degraded { message }) => format!("degraded: {message}"),
                Ok(Health::Unavailable { message }) => format!("unavailable: {message}"),
                Err(_) => "no answer within 10 s".to_owned(),
            };
            let mut test = String::new();
            let mut ok = !health.starts_with("unavailable") && !health.starts_with("no answer");
            if args.send_test {
                let event = Event::now(
                    format!("check-{}", herald_daemon::now_ms()),
                    0,
                    Message {
                        title: "herald check".into(),
                        text: format!("test message for notifier `{}`", n.name),
                        level: Level::Info,
                    },
                );
                let notification = render::notification(&RunContext::new(&event.run), &event, None, None, 1);
                let t0 = Instant::now();
                match herald_daemon::deliver_with_timeout(notifier.clone(), notification, n.routing.timeout)
                    .await
                {
                    Ok(_) => test = format!("sent in {} ms", t0.elapsed().as_millis()),
                    Err(e) => {
                        ok = false;
                        test = format!("failed: {e}");
                    }
                }
            }
            rows.push((n.name.clone(), n.kind.clone(), health, test, ok));
        }
        rows
    });
    let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(8);
    let w1 = rows.iter().map(|r| r.1.len()).max().unwrap_or(0).max(4);
    let w2 = rows.iter().map(|r| r.2.len()).max().unwrap_or(0).max(6);
    println!();
    if args.send_test {
        println!("{:w0$}  {:w1$}  {:w2$}  TEST", "NOTIFIER", "TYPE", "HEALTH");
    } else {
        println!("{:w0$}  {:w1$}  HEALTH", "NOTIFIER", "TYPE");
    }
    for (name, kind, health, test, ok) in &rows {
        if !ok {
            problems += 1;
        }
        if args.send_test {
            println!("{name:w0$}  {kind:w1$}  {health:w2$}  {test}");
        } else {
            println!("{name:w0$}  {kind:w1$}  {health}");
        }
    }
    if problems > 0 {
        bail!("{problems} problem(s) found");
    }
    println!("\nall good");
    Ok(())
}
