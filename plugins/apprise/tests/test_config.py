"""The configuration table: each mistake is an error that names the key and the URL's position and scheme, never
the URL; urls_file and config_file (Apprise YAML with tags) load; the event-to-notify-type mapping."""

import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))

import apprise  # noqa: E402

from herald_notify_apprise.config import ConfigError, Scrubber, parse  # noqa: E402
from herald_notify_apprise.deliver import notify_type  # noqa: E402

SECRET = "s3cr3tT0ken"
GOOD = f"json://user:{SECRET}@127.0.0.1:9/hook"

YAML = f"""
version: 1
urls:
  - json://bot:{SECRET}@127.0.0.1:9/gpu:
      - tag: gpu, team
  - form://127.0.0.1:9/cpu:
      - tag: cpu
  - json://127.0.0.1:9/always:
      - tag: always
"""


class ConfigErrors(unittest.TestCase):
    def check(self, table, key, *phrases):
        with self.assertRaises(ConfigError) as caught:
            parse(table)
        message = str(caught.exception)
        self.assertTrue(message.startswith(f"{key}:"), message)
        for phrase in phrases:
            self.assertIn(phrase, message)
        self.assertNotIn(SECRET, message)
        self.assertNotIn("127.0.0.1:9", message)
        return message

    def test_mistakes_name_the_key_and_the_position(self):
        cases = [
            ({}, "urls", ["missing", "urls_file", "config_file"]),
            ({"urls": []}, "urls", ["empty"]),
            ({"urls": 5}, "urls", ["expected a list"]),
            ({"urls": [GOOD, 7]}, "urls", ["item 2"]),
            ({"urls": [GOOD, f"nope://{SECRET}@x"]}, "urls", ["URL 2 of 2", "scheme `nope`", "unknown scheme"]),
            ({"urls": [f"{SECRET}-no-scheme"]}, "urls", ["URL 1 of 1", "not an Apprise URL"]),
            ({"urls": [GOOD, "discord://"]}, "urls", ["URL 2 of 2", "scheme `discord`", "Apprise cannot use"]),
            ({"urls": [GOOD, GOOD]}, "urls", ["URL 2 of 2 repeats URL 1 of 2"]),
            ({"urls": [GOOD], "config_file": "/x.yml"}, "config_file", ["only one of"]),
            ({"urls": [GOOD], "config": "x"}, "config_file", ["only one of"]),
            # From the daemon, `urls_file` arrives as `urls` holding the file's text, `config_file` as `config`.
            ({"urls": f"# team\n{GOOD}\nnope://{SECRET}@x\n"}, "urls_file", ["line 3", "scheme `nope`"]),
            ({"urls": "# nothing\n"}, "urls_file", ["holds no URL"]),
            ({"config": YAML + f"  - nope://{SECRET}@x:\n      - tag: gpu\n"}, "config_file", ["urls entry 4", "scheme `nope`"]),
            ({"config": YAML.replace("always", "spare"), "tags": ["tpu"]}, "tags", ["no URL", "tpu"]),
            ({"config": 5}, "config", ["Apprise configuration"]),
            ({"urls": [GOOD], "tags": ["gpu"]}, "tags", ["config_file"]),
            ({"urls": [GOOD], "format": "rtf"}, "format", ["markdown", "html", "text"]),
            ({"urls": [GOOD], "attach_plot": "yes"}, "attach_plot", ["true or false"]),
            ({"urls": [GOOD], "token": "x"}, "token", ["unknown key"]),
            ({"urls_file": "/no/such/file"}, "urls_file", ["cannot read /no/such/file"]),
            ({"config_file": "/no/such/file.yml"}, "config_file", ["cannot read"]),
        ]
        for table, key, phrases in cases:
            with self.subTest(table=str(table).replace(SECRET, "***")):
                self.check(table, key, *phrases)

    def test_a_bad_line_of_a_urls_file_is_named_by_line(self):
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write(f"# team\n{GOOD}\n\nmatrixx://{SECRET}@example.org/room\n")
        self.addCleanup(os.unlink, f.name)
        self.check({"urls_file": f.name}, "urls_file", f"{f.name}: line 4", "scheme `matrixx`", "unknown scheme")

    def test_an_empty_urls_file_is_an_error(self):
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write("# nothing yet\n\n")
        self.addCleanup(os.unlink, f.name)
        self.check({"urls_file": f.name}, "urls_file", "holds no URL")

    def test_a_bad_entry_of_a_config_file_is_named_by_position(self):
        with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
            f.write(YAML + f"  - nope://{SECRET}@example.org:\n      - tag: gpu\n")
        self.addCleanup(os.unlink, f.name)
        self.check({"config_file": f.name}, "config_file", "urls entry 4", "scheme `nope`", "unknown scheme")

    def test_tags_that_match_nothing_are_an_error(self):
        with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
            f.write(YAML.replace("always", "spare"))
        self.addCleanup(os.unlink, f.name)
        self.check({"config_file": f.name, "tags": ["tpu"]}, "tags", "no URL", "tpu")


class ConfigLoads(unittest.TestCase):
    def test_urls_load_in_order_with_their_schemes(self):
        config = parse({"urls": [GOOD, "form://127.0.0.1:9/b"], "format": "html", "attach_plot": False})
        self.assertEqual([str(s) for s in config.services], ["URL 1 (json)", "URL 2 (form)"])
        self.assertEqual((config.body, config.body_format, config.attach_plot), ("html", apprise.NotifyFormat.HTML, False))
        self.assertEqual(parse({"urls": [GOOD]}).body, "markdown", "markdown by default")

    def test_a_urls_file_skips_comments_and_blank_lines(self):
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write(f"# team\n{GOOD}\n\n  form://127.0.0.1:9/b  \n")
        self.addCleanup(os.unlink, f.name)
        config = parse({"urls_file": f.name})
        self.assertEqual([str(s) for s in config.services], ["line 2 (json)", "line 4 (form)"])

    def test_a_config_file_with_tags_keeps_the_tagged_urls_and_always(self):
        with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
            f.write(YAML)
        self.addCleanup(os.unlink, f.name)
        self.assertEqual(len(parse({"config_file": f.name}).services), 3)
        gpu = parse({"config_file": f.name, "tags": ["gpu"]})
        self.assertEqual([str(s) for s in gpu.services], ["URL 1 (json)", "URL 2 (json)"])
        cpu = parse({"config_file": f.name, "tags": "cpu"})
        self.assertEqual([s.scheme for s in cpu.services], ["form", "json"])

    def test_the_texts_herald_reads_from_urls_file_and_config_file_load(self):
        urls = parse({"urls": f"{GOOD}\n# spare\nform://127.0.0.1:9/b\n"})
        self.assertEqual([str(s) for s in urls.services], ["line 1 (json)", "line 3 (form)"])
        tagged = parse({"config": YAML, "tags": ["gpu"]})
        self.assertEqual([str(s) for s in tagged.services], ["URL 1 (json)", "URL 2 (json)"])

    def test_the_fingerprint_follows_the_list(self):
        a = parse({"urls": [GOOD, "form://127.0.0.1:9/b"]})
        b = parse({"urls": [GOOD, "form://127.0.0.1:9/c"]})
        self.assertNotEqual(a.fingerprint, b.fingerprint)
        self.assertEqual(a.fingerprint, parse({"urls": [GOOD, "form://127.0.0.1:9/b"]}).fingerprint)
        self.assertNotIn(SECRET, a.fingerprint)


class Scrubbing(unittest.TestCase):
    def test_every_part_of_a_url_is_masked(self):
        scrub = Scrubber([f"matrixs://alice:{SECRET}@matrix.example.org/#training?token=AbCdEf%2B1"])
        text = scrub(f"login failed for alice with {SECRET} at matrix.example.org (token AbCdEf+1): see https://x.y/z")
        for piece in ("alice", SECRET, "matrix.example.org", "AbCdEf+1", "https://"):
            self.assertNotIn(piece, text)
        self.assertIn("login failed", text)


class NotifyTypes(unittest.TestCase):
    def test_events_map_to_apprise_notify_types(self):
        T = apprise.NotifyType
        cases = [
            ({"type": "run_started"}, T.INFO),
            ({"type": "epoch_ended"}, T.INFO),
            ({"type": "run_finished", "status": "completed"}, T.SUCCESS),
            ({"type": "run_finished", "status": "stopped"}, T.WARNING),
            ({"type": "run_finished", "status": "failed"}, T.FAILURE),
            ({"type": "run_failed"}, T.FAILURE),
            ({"type": "run_lost"}, T.FAILURE),
            ({"type": "run_stalled"}, T.WARNING),
            ({"type": "message"}, T.INFO),
            ({"type": "message", "level": "warning"}, T.WARNING),
            ({"type": "message", "level": "error"}, T.FAILURE),
        ]
        for event, expected in cases:
            with self.subTest(event=event):
                self.assertEqual(notify_type(event), expected)


if __name__ == "__main__":
    unittest.main()
