//! Slack's errors as the host's [`DeliveryError`]s: an `ok: false` answer's code, mapped to a retryable or
//! permanent error that says what to fix, and a failed send.

use herald_plugin::DeliveryError;

pub(crate) enum SlackError {
    /// Slack's `error` code from an `ok: false` answer.
    Api(String),
    Other(DeliveryError),
}

impl SlackError {
    pub(crate) fn into_error(self, method: &str) -> DeliveryError {
        match self {
            SlackError::Other(e) => e,
            SlackError::Api(code) => {
                let (retryable, hint) = match code.as_str() {
                    "invalid_auth" | "not_authed" | "account_inactive" | "token_revoked"
                    | "token_expired" => (false, "check the bot token in the configuration"),
                    "channel_not_found" => (false, "check `channel`, and that the bot can see it"),
                    "not_in_channel" => (false, "invite the bot to the channel (/invite @yourbot)"),
                    "missing_scope" => {
                        (false, "give the bot the chat:write and files:write scopes and reinstall it")
                    }
                    "is_archived" => (false, "the channel is archived: pick another one"),
                    "internal_error"
                    | "fatal_error"
                    | "service_unavailable"
                    | "request_timeout"
                    | "ratelimited" => (true, "will retry"),
                    _ => (false, "the request was refused"),
                };
                let message = format!("Slack answered {method} with `{code}`: {hint}");
                let e = if retryable {
                    DeliveryError::retryable(message)
                } else {
                    DeliveryError::permanent(message)
                };
                e.with_code(format!("slack_{code}"))
            }
        }
    }
}

pub(crate) fn send_error(e: reqwest::Error) -> DeliveryError {
    herald_http::send_error("Slack", e)
}
