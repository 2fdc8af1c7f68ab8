"""The examples of docs/notifiers/apprise.md load: every `type = "apprise"` table, as the daemon hands it to the
plugin (routing keys out, `${VAR:-default}` interpolated, `urls_file` and `config_file` read into `urls` and
`config`, with the page's YAML example as the configuration file)."""

import os
import re
import sys
import tomllib
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.join(ROOT, "plugins", "apprise", "src"))

from herald_notify_apprise.config import parse  # noqa: E402

PAGE = os.path.join(ROOT, "docs", "notifiers", "apprise.md")
HOST_KEYS = {"name", "type", "events", "every_n_epochs", "min_interval", "only_on_improvement", "rate_per_s",
             "burst", "timeout", "max_age", "command", "concurrency", "handshake_timeout", "delivery_timeout",
             "shutdown_grace", "quiet_hours", "timezone", "digest"}
URLS_FILE = "# the on-call phones\ngotify://gotify.example.org/AbCdEf12345\n\nntfys://ntfy.sh/herald-7f3c9a1e\n"


def blocks(kind):
    with open(PAGE, encoding="utf-8") as f:
        return re.findall(rf"```{kind}\n(.*?)```", f.read(), re.S)


def interpolate(text):
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", text)


class DocsExamples(unittest.TestCase):
    def test_every_example_table_loads(self):
        yaml = blocks("yaml")
        self.assertEqual(len(yaml), 1, "the page has one Apprise configuration example")
        tables = [t for b in blocks("toml") for t in tomllib.loads(interpolate(b)).get("notifier", [])]
        self.assertEqual([t["name"] for t in tables], ["team", "oncall", "gpu-team"])
        services = {}
        for table in tables:
            self.assertEqual(table["type"], "apprise")
            plugin_table = {k: v for k, v in table.items() if k not in HOST_KEYS}
            if "urls_file" in plugin_table:
                del plugin_table["urls_file"]
                plugin_table["urls"] = URLS_FILE
            if "config_file" in plugin_table:
                del plugin_table["config_file"]
                plugin_table["config"] = yaml[0]
            with self.subTest(table=table["name"]):
                services[table["name"]] = [str(s) for s in parse(plugin_table).services]
        self.assertEqual(services["team"], ["URL 1 (matrixs)", "URL 2 (workflows)"])
        self.assertEqual(services["oncall"], ["line 2 (gotify)", "line 4 (ntfys)"])
        self.assertEqual(services["gpu-team"], ["URL 1 (mmosts)", "URL 2 (gotify)"], "the URLs tagged gpu")


if __name__ == "__main__":
    unittest.main()
