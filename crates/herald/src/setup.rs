//! `herald setup telegram --token T [--write]`: set up the Telegram notifier in a minute. Checks the token
//! with `getMe`, asks you to send the bot any message, reads the chat id from `getUpdates`, and prints the
//! `[[notifier]]` stanza, or with `--write` appends it to the configuration file (created with mode 0600 when
//! missing, since it holds the token).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// `herald setup`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
}

#[derive(Debug, clap::Subcommand)]
pub enum What {
    /// Find the chat id for a Telegram bot and write the notifier's configuration.
    Telegram(TelegramArgs),
}

#[derive(Debug, clap::Args)]
pub struct TelegramArgs {
    /// The bot token from @BotFather (`123456:ABC...`).
    #[arg(long, env = "HERALD_TELEGRAM_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Append the stanza to the configuration file (--config, $HERALD_CONFIG or ~/.config/herald/herald.toml)
    /// instead of printing it.
    #[arg(long)]
    pub write: bool,
    /// How long to wait for your message to the bot.
    #[arg(long, default_value = "120", value_name = "SECONDS")]
    pub wait: u64,
    /// The Bot API server (for self-hosted Bot API servers and tests).
    #[arg(long, default_value = herald_telegram::DEFAULT_API_URL, value_name = "URL")]
    pub api_url: String,
    /// The notifier's name in the configuration.
    #[arg(long, default_value = "telegram")]
    pub name: String,
}

pub fn run(config_path: Option<&Path>, args: Args) -> Result<()> {
    match args.what {
        What::Telegram(t) => telegram(config_path, t),
    }
}

fn telegram(config_path: Option<&Path>, args: TelegramArgs) -> Result<()> {
    let setup = herald_telegram::setup::Setup::new(args.token.trim(), &args.api_url)
        .map_err(|e| anyhow::anyhow!("--token: {e}"))?;
    let runtime = crate::serve::runtime()?;
    let bot = runtime
        .block_on(setup.bot_username())
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("checking the token with Telegram (getMe)")?;
    eprintln!("Found the bot @{bot}.");
    eprintln!(
        "Now send it any message from the chat that should get the notifications (open https://t.me/{bot} \
         and press Start, or add the bot to a group and write there). Waiting up to {} s...",
        args.wait
    );
    let found = runtime
        .block_on(setup.first_chat(Duration::from_secs(args.wait)))
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("reading messages to the bot (getUpdates)")?;
    let Some(chat) = found else {
        bail!("no message reached @{bot} within {} s: send it a message and run this again", args.wait);
    };
    eprintln!(
        "Got a message from {} in the {} chat {:?} (id {}).",
        chat.from, chat.kind, chat.title, chat.id
    );
    let stanza = stanza(&args.name, args.token.trim(), chat.id, &args.api_url);
    if !args.write {
        println!("{stanza}");
        eprintln!(
            "Add the lines above to your herald.toml (or run again with --write), then `herald check --send-test`."
        );
        return Ok(());
    }
    let path = config_file(config_path)?;
    append(&path, &args.name, &stanza)?;
    eprintln!("Wrote the telegram notifier to {}. Try it: herald check --send-test", path.display());
    Ok(())
}

/// The `[[notifier]]` stanza.
fn stanza(name: &str, token: &str, chat_id: i64, api_url: &str) -> String {
    let mut out = format!(
        "\n# Telegram, set up by `herald setup telegram`.\n[[notifier]]\nname = \"{name}\"\ntype = \"telegram\"\n\
         token = \"{token}\"\nchat_id = {chat_id}\n"
    );
    if api_url.trim_end_matches('/') != herald_telegram::DEFAULT_API_URL {
        out.push_str(&format!("api_url = \"{api_url}\"\n"));
    }
    out
}

/// The file `--write` appends to.
fn config_file(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_owned());
    }
    if let Some(p) = std::env::var_os("HERALD_CONFIG").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    herald_daemon::config::default_path(&|k| std::env::var(k).ok())
        .context("cannot tell where the configuration lives: set HOME, or pass --config")
}

/// Append the stanza, refusing a second notifier of the same name; a new file gets mode 0600.
fn append(path: &Path, name: &str, stanza: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    if let Some(text) = &existing {
        let table: toml::Table =
            text.parse().with_context(|| format!("{} is not valid TOML; fix it first", path.display()))?;
        let taken = table.get("notifier").and_then(|n| n.as_array()).is_some_and(|list| {
            list.iter().any(|n| {
                n.get("name")
                    .and_then(|v| v.as_str())
                    .unwrap_or_else(|| n.get("type").and_then(|v| v.as_str()).unwrap_or_default())
                    == name
            })
        });
        if taken {
            bail!("{} already has a notifier named `{name}`: edit it, or pass --name", path.display());
        }
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    file.write_all(stanza.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stanza_parses_and_names_the_chat() {
        let text = stanza("telegram", "1:abc", -100, "https://api.telegram.org/");
        let table: toml::Table = text.parse().expect("valid TOML");
        let n = &table["notifier"][0];
        assert_eq!(n["chat_id"].as_integer(), Some(-100));
        assert!(n.get("api_url").is_none());
        assert!(stanza("t", "1:abc", 5, "http://127.0.0.1:9").contains("api_url = \"http://127.0.0.1:9\""));
    }

    #[test]
    fn append_refuses_a_duplicate_name() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("sub/herald.toml");
        append(&path, "telegram", &stanza("telegram", "1:abc", 5, herald_telegram::DEFAULT_API_URL))
            .expect("written");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("exists").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let err = append(&path, "telegram", "x").expect_err("duplicate");
        assert!(err.to_string().contains("already has a notifier named `telegram`"), "{err}");
    }
}
