//! `herald plugins`: the notifier types this build knows, with a line on each, and the out-of-process
//! plugins found as `herald-notify-<type>` executables on PATH or in `~/.local/share/herald/plugins`.

use anyhow::Result;

/// List the notifier types (`type = "..."` in a `[[notifier]]` table).
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> Result<()> {
    let registry = herald_daemon::builtins::registry();
    let mut kinds: Vec<(String, String)> =
        registry.kinds().map(|(k, d)| (k.to_owned(), format!("built in: {d}"))).collect();
    kinds.sort_unstable();
    for (kind, path) in herald_plugin_host::discover_all() {
        let note = match registry.contains(&kind) {
            true => format!("plugin {} (not used: the built-in `{kind}` comes first)", path.display()),
            false => format!("plugin {}", path.display()),
        };
        kinds.push((kind, note));
    }
    let width = kinds.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (kind, description) in kinds {
        println!("{kind:width$}  {description}");
    }
    Ok(())
}
