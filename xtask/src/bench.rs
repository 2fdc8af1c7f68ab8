//! `cargo xtask bench <name>`: the benchmarks behind the performance targets. Each measures the things it
//! compares side by side in one run, since the machine is shared and noisy, and prints the ratios.

use std::path::Path;

use anyhow::{Result, bail};

use crate::{cargo, step};

#[path = "bench_apprise.rs"]
mod apprise;
#[path = "bench_cluster.rs"]
mod cluster;
#[path = "bench_daemon.rs"]
mod daemon;
#[path = "bench_dashboard.rs"]
mod dashboard;
#[path = "bench_ranks.rs"]
mod ranks;
#[path = "bench_rules.rs"]
mod rules;
#[path = "bench_trainer.rs"]
mod trainer;

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("emitter") => step(
            "bench emitter",
            cargo(&["bench", "-p", "herald-callback", "--bench", "emitter", "--", "--warm-up-time", "1"]),
        ),
        Some("plugins") => step(
            "bench plugins",
            cargo(&["bench", "-p", "herald-plugin-host", "--bench", "plugins", "--", "--warm-up-time", "1"]),
        ),
        Some("daemon") => daemon::run(root, &args[1..]),
        Some("dashboard") => dashboard::run(root, &args[1..]),
        Some("cluster") => cluster::run(root, &args[1..]),
        Some("apprise") => apprise::run(root, &args[1..]),
        Some("trainer") => trainer::run(root, &args[1..]),
        Some("ranks") => ranks::run(root, &args[1..]),
        Some("rules") => rules::run(root, &args[1..]),
        Some(other) => {
            bail!(
                "unknown benchmark `{other}`: expected emitter, trainer, daemon, dashboard, ranks, rules, cluster, plugins or apprise"
            )
        }
        None => {
            bail!(
                "name a benchmark: emitter, trainer, daemon, dashboard, ranks, rules, cluster, plugins or apprise"
            )
        }
    }
}
