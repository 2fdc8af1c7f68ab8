"""herald-notify-apprise: a Herald notifier plugin that delivers through Apprise.

The daemon runs it as `herald-notify-apprise` for `type = "apprise"` and speaks Herald's plugin protocol 1.0
with it on stdin and stdout (docs/plugin-protocol.md). The modules:

- `config`: the `[[notifier]]` table (`urls` | `urls_file` | `config_file`, `tags`, `format`, `attach_plot`,
  `state_dir`), checked at the handshake; every URL is loaded into an Apprise service or named, by position
  and scheme only, in the error;
- `deliver`: one delivery attempt to the services not yet done, with Apprise's reason for each failure;
- `progress`: which services a notification already reached, on disk, so that a retry after a partial failure
  (even in a restarted plugin) goes only to the others;
- `plugin`: the protocol loop and the console script's `main`.

URLs carry credentials: nothing here logs or echoes one; texts that come from Apprise pass through
`config.Scrubber` first. It does not retry (the daemon owns retries, backoff and rate limits) and does not
follow Apprise configuration `include`s.
"""

__version__ = "0.1.0"
