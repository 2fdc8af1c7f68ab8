//! The `herald` command line: one binary for the daemon, the trainer demo and the client commands.
//!
//! Each subcommand lives in its own module; this file only parses arguments and dispatches.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod check;
mod plugin_test;
mod plugins;
mod rules;
mod send;
mod serve;
mod setup;
mod status;
mod stop;
mod train;
mod watch;

/// Training notifications on your phone: live epoch stats, loss curves, crash and stall alerts, stop from the
/// phone.
#[derive(Debug, Parser)]
#[command(name = "herald", version, about)]
struct Cli {
    /// Configuration file (default: $HERALD_CONFIG, then ~/.config/herald/herald.toml, then built-in defaults).
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: take events, keep them in the outbox, deliver them (systemd: config/herald.service).
    Serve(serve::Args),
    /// Send a message, or events from a file, through the daemon or directly.
    Send(send::Args),
    /// Show the daemon's runs, notifiers and outbox.
    Status(status::Args),
    /// Validate the configuration and the notifiers (with --send-test, send a test message).
    Check(check::Args),
    /// Ask a training run to stop.
    Stop(stop::Args),
    /// List the alert rules (configured and from the phone), the runs they fired for, and muted runs.
    Rules(rules::Args),
    /// Run a command and report its start and end (like knockknock).
    Watch(watch::Args),
    /// List the notifier types: built in, and plugins found as herald-notify-<type> executables.
    Plugins(plugins::Args),
    /// Work with out-of-process notifier plugins (`herald plugin test -- CMD ARGS...`).
    Plugin(plugin_test::Args),
    /// Set up a notifier interactively (`herald setup telegram --token T`).
    Setup(setup::Args),
    /// Train the demo model (MLP on the digits data) with fit_one_cycle and report its events
    /// (runs the `herald-train` binary installed beside this one; `herald train --help` lists its options).
    #[command(disable_help_flag = true)]
    Train(train::Args),
}

/// Log to stderr at `default` level unless `RUST_LOG` says otherwise.
fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => report(&err),
    }
}

/// An error the user can act on: one line on stderr, `herald: ` then the message and its causes joined by
/// `: `, and exit code 1. Never a backtrace, whatever `RUST_BACKTRACE` says: returning the error from `main`
/// would print anyhow's `Debug` form, which appends one. A bug still panics, and a panic prints its backtrace
/// as usual.
fn report(err: &anyhow::Error) -> ExitCode {
    eprintln!("herald: {err:#}");
    ExitCode::FAILURE
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let config = cli.config.as_deref();
    match cli.command {
        Command::Serve(args) => {
            init_tracing("info");
            serve::run(config, args)
        }
        Command::Send(args) => {
            init_tracing("warn");
            send::run(config, args)
        }
        Command::Status(args) => {
            init_tracing("warn");
            status::run(config, args)
        }
        Command::Check(args) => {
            init_tracing("warn");
            check::run(config, args)
        }
        Command::Stop(args) => {
            init_tracing("warn");
            stop::run(config, args)
        }
        Command::Rules(args) => {
            init_tracing("warn");
            rules::run(config, args)
        }
        Command::Watch(args) => {
            init_tracing("warn");
            watch::run(config, args)
        }
        Command::Plugins(args) => plugins::run(args),
        Command::Plugin(args) => plugin_test::run(args),
        Command::Setup(args) => {
            init_tracing("warn");
            setup::run(config, args)
        }
        Command::Train(args) => train::run(config, args),
    }
}
