//! `herald serve`: run the daemon in the foreground (systemd runs it as `config/herald.service`).
//!
//! Also home of the helpers every client command shares: loading the configuration and building a client
//! for the configured daemon. The daemon itself is `herald_daemon::serve`, or `herald_cluster::serve` with
//! `[cluster]`.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use herald_daemon::config::{self, Config};

/// Run the daemon until SIGTERM or SIGINT.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(config_path: Option<&Path>, _args: Args) -> Result<()> {
    let config = load_config(config_path)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let registry = herald_daemon::builtins::registry();
    // With `[cluster]`, this node's role in cluster mode; without, nothing changes.
    match config.cluster {
        Some(_) => runtime.block_on(herald_cluster::serve(&config, &registry))?,
        None => runtime.block_on(herald_daemon::serve(&config, &registry))?,
    }
    Ok(())
}

/// The configuration from `--config`, `$HERALD_CONFIG`, `~/.config/herald/herald.toml` or the defaults.
pub fn load_config(path: Option<&Path>) -> Result<Config> {
    // The error names the file, line, column and key; nothing to add.
    config::load(path).map_err(|e| anyhow::anyhow!("{e}"))
}

/// A client for the configured daemon.
pub fn client(config: &Config, timeout: Duration) -> Result<herald_daemon::Client> {
    let token = config.daemon.token.as_ref().map(|t| t.expose().to_owned());
    Ok(herald_daemon::Client::new(config.daemon.listen, token, timeout)?)
}

/// A small runtime for client commands.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
