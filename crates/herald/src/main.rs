//! The `herald` command line: one binary for the daemon, the trainer demo and the client commands.
//!
//! Each subcommand lives in its own module; this file only parses arguments and dispatches.

use std::path::PathBuf;

use clap::Parser;

/// Training notifications on your phone: live epoch stats, loss curves, crash and stall alerts, stop from the
/// phone.
#[derive(Debug, Parser)]
#[command(name = "herald", version, about)]
struct Cli {
    /// Configuration file (default: $HERALD_CONFIG, then ~/.config/herald/herald.toml, then built-in defaults).
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    Ok(())
}
