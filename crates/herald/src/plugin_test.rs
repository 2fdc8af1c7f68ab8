//! `herald plugin test -- CMD ARGS...`: the conformance kit for out-of-process notifier plugins.
//!
//! Runs `herald_plugin_host::conformance` against the command (handshake, deliveries, malformed input it
//! must survive, a clean stdout, shutdown), prints the pass/fail table and exits non-zero when a check fails.
//! The plugin's configuration table comes from `--with KEY=VALUE` (repeatable) or `--json`. The kit itself
//! lives in the plugin-host crate, where its tests run without this binary and plugin authors call it from
//! their own tests.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// Work with out-of-process notifier plugins.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Drive a plugin through the protocol and print a pass/fail table (exits 1 when a check fails).
    Test(TestArgs),
}

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// A key of the plugin's configuration table, as KEY=VALUE; VALUE is read as JSON when it parses
    /// (numbers, true, false, "quoted"), else taken as a string. Repeatable.
    #[arg(long = "with", value_name = "KEY=VALUE")]
    pub with: Vec<String>,
    /// The whole configuration table as a JSON object (keys from --with are added to it).
    #[arg(long, value_name = "OBJECT")]
    pub json: Option<String>,
    /// How long to wait for each answer, in seconds.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    pub timeout: f64,
    /// The plugin's command and arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

pub fn run(args: Args) -> Result<()> {
    let Command::Test(args) = args.command;
    let mut config = match &args.json {
        Some(text) => {
            match serde_json::from_str::<serde_json::Value>(text).context("--json is not valid JSON")? {
                serde_json::Value::Object(map) => map,
                _ => bail!("--json must be a JSON object, such as '{{\"url\": \"http://127.0.0.1:8080\"}}'"),
            }
        }
        None => serde_json::Map::new(),
    };
    for pair in &args.with {
        let Some((key, value)) = pair.split_once('=') else {
            bail!("--with {pair}: write KEY=VALUE, such as --with url=http://127.0.0.1:8080");
        };
        let value =
            serde_json::from_str(value).unwrap_or_else(|_| serde_json::Value::String(value.to_owned()));
        config.insert(key.trim().to_owned(), value);
    }
    if !(args.timeout.is_finite() && args.timeout > 0.0 && args.timeout < 3600.0) {
        bail!("--timeout must be a number of seconds from 0 to 3600");
    }
    let Some((program, rest)) = args.command.split_first() else {
        bail!("name the plugin's command after `--`, such as `herald plugin test -- herald-notify-gotify`");
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime.block_on(herald_plugin_host::conformance::run(
        &PathBuf::from(program),
        rest,
        serde_json::Value::Object(config),
        Duration::from_secs_f64(args.timeout),
    ));
    print!("{}", report.table());
    if !report.passed() {
        std::process::exit(1);
    }
    Ok(())
}
