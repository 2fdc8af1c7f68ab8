//! `herald-notify-gotify`: the Gotify notifier as an out-of-process Herald plugin.
//!
//! Put it on `PATH` (or in `~/.local/share/herald/plugins`) and write `type = "gotify"` in a `[[notifier]]`
//! table; the daemon starts it and sends the table in `hello`. It speaks the protocol on stdin and stdout and
//! logs to stderr; it is not meant to be run by hand (`herald plugin test -- herald-notify-gotify` drives it).

use std::process::ExitCode;

use herald_notify_gotify::GotifyConfig;

#[tokio::main]
async fn main() -> ExitCode {
    match herald_plugin::serve_type::<GotifyConfig>(env!("CARGO_PKG_VERSION")).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // stderr is a plugin's log: the host shows this line tagged with the notifier's name.
            eprintln!("herald-notify-gotify: {e}");
            ExitCode::FAILURE
        }
    }
}
