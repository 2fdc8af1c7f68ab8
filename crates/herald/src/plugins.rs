//! `herald plugins`: the notifier types this build knows, with a line on each.

use anyhow::Result;

/// List the notifier types (`type = "..."` in a `[[notifier]]` table).
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> Result<()> {
    let registry = herald_daemon::builtins::registry();
    let mut kinds: Vec<(&str, &str)> = registry.kinds().collect();
    kinds.sort_unstable();
    let width = kinds.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (kind, description) in kinds {
        println!("{kind:width$}  {description}");
    }
    Ok(())
}
