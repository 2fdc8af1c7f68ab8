"""The `[[notifier]]` table of `type = "apprise"`, checked at the handshake.

`parse` turns the table the daemon sends in `hello` into a `Config`: the Apprise services to notify (each one
loaded by Apprise itself, so an unknown scheme or a URL Apprise cannot read is found before the first
delivery), the rendering to hand Apprise, whether to attach the loss curve, and where partial deliveries are
remembered. Every problem is a `ConfigError` whose message starts with the key and names a URL by its position
and scheme only: URLs carry tokens and passwords, so none is ever echoed, and texts from Apprise go through a
`Scrubber` that masks every part of every configured URL.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import threading
import urllib.parse
from dataclasses import dataclass
from typing import Iterator, List, Optional, Tuple

import apprise
from apprise.config.base import ConfigBase
from apprise.manager_plugins import NotificationManager

KEYS = ("urls", "urls_file", "config", "config_file", "tags", "format", "attach_plot", "state_dir")
# Herald's configuration reads `K_file = "path"` into `K` (the file's text) before the plugin sees the table, so
# from the daemon `urls_file` arrives as `urls` (a string) and `config_file` as `config`; the file keys are
# also taken as they are (from `herald plugin test --with config_file=...`, say).
SOURCES = ("urls", "urls_file", "config", "config_file")
FORMATS = {
    "markdown": apprise.NotifyFormat.MARKDOWN,
    "html": apprise.NotifyFormat.HTML,
    "text": apprise.NotifyFormat.TEXT,
}
SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]{0,31})://")
# Anything URL-shaped in a text from Apprise.
URL_LIKE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S*")


class ConfigError(ValueError):
    """A configuration problem; the message starts with the key and says what to do."""


class Scrubber:
    """Masks the configured URLs, and every piece of them, in a text (an Apprise log line, an exception)."""

    def __init__(self, urls: List[str]):
        self.urls = list(urls)
        pieces = set()
        for url in urls:
            pieces.add(url)
            scheme = SCHEME.match(url)
            for piece in re.split(r"[:/@?&=#,;+\s]+", url):
                for p in (piece, urllib.parse.unquote(piece)):
                    if len(p) >= 3 and not (scheme and p.lower() == scheme.group(1).lower()):
                        pieces.add(p)
        # Longest first, so that a piece inside a longer one does not leave the rest of it showing.
        self.pieces = sorted(pieces, key=len, reverse=True)

    def extended(self, urls: List[str]) -> "Scrubber":
        """A scrubber that also masks `urls`."""
        return Scrubber(self.urls + list(urls))

    def __call__(self, text: str) -> str:
        text = URL_LIKE.sub("<url>", str(text))
        for p in self.pieces:
            text = text.replace(p, "***")
        return text


class _Capture(logging.Handler):
    """Apprise's log records of the current thread, while `captured()` is active (level WARNING and up)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.local = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        buffer = getattr(self.local, "buffer", None)
        if buffer is not None:
            try:
                buffer.append((record.levelno, record.getMessage()))
            except Exception:  # a record that cannot be formatted is not worth a crash
                buffer.append((record.levelno, str(record.msg)))


_capture = _Capture()
logging.getLogger("apprise").addHandler(_capture)


@contextlib.contextmanager
def captured() -> Iterator[List[Tuple[int, str]]]:
    """Collect what Apprise logs in this thread meanwhile, as (level, message)."""
    _capture.local.buffer = []
    try:
        yield _capture.local.buffer
    finally:
        _capture.local.buffer = None


@dataclass
class Service:
    """One Apprise URL, loaded: `position` counts from 1 in the order of the configuration."""

    position: int
    label: str
    scheme: str
    apprise: apprise.Apprise
    fingerprint: str

    def __str__(self) -> str:
        return f"{self.label} ({self.scheme})"


@dataclass
class Config:
    services: List[Service]
    # Which rendering of the notification to hand Apprise: `markdown`, `html` or `text`.
    body: str
    attach_plot: bool
    state_dir: str
    scrub: Scrubber
    # Identifies the list of services, so remembered progress applies to this list only.
    fingerprint: str

    @property
    def body_format(self) -> str:
        return FORMATS[self.body]


def default_state_dir() -> str:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "herald", "apprise")


def asset() -> apprise.AppriseAsset:
    return apprise.AppriseAsset(app_id="Herald", app_desc="Herald training notifications")


def known_schemes() -> set:
    return {s.lower() for s in NotificationManager().schemas()}


def _fingerprint(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def load_url(key: str, label: str, url: str, scrub: Scrubber, schemes: set) -> object:
    """The Apprise service for `url`, or a ConfigError naming it as `key: label (scheme ...)`."""
    url = url.strip()
    match = SCHEME.match(url)
    if not match:
        raise ConfigError(
            f"{key}: {label} is not an Apprise URL: write it as scheme://..., such as json://localhost:8080/hook "
            "(the URL itself is not shown: it may hold a secret)"
        )
    scheme = match.group(1).lower()
    if scheme not in schemes:
        raise ConfigError(
            f"{key}: {label} (scheme `{scheme}`): unknown scheme: Apprise has no service by that name; "
            "`apprise --details` lists the ones it knows"
        )
    with captured() as messages:
        try:
            server = apprise.Apprise.instantiate(url, asset=asset(), suppress_exceptions=True)
        except Exception as e:  # suppress_exceptions should see to it; an Apprise bug must not crash the handshake
            messages.append((logging.ERROR, f"{type(e).__name__}: {e}"))
            server = None
    if server is None:
        reason = "; ".join(dict.fromkeys(scrub(m) for _, m in messages)) or "no reason given"
        raise ConfigError(f"{key}: {label} (scheme `{scheme}`): Apprise cannot use this URL: {reason}")
    return server


def _string_list(key: str, value: object, what: str) -> List[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ConfigError(f"{key}: expected a list of {what}")
    for i, item in enumerate(value, 1):
        if not isinstance(item, str) or not item.strip():
            raise ConfigError(f"{key}: item {i} is not a non-empty string; expected a list of {what}")
    return value


def _read(key: str, value: object) -> Tuple[str, str]:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key}: expected a file path")
    path = os.path.expanduser(value)
    try:
        with open(path, encoding="utf-8") as f:
            return path, f.read()
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ConfigError(f"{key}: cannot read {path}: {why}") from None


def _url_lines(text: str) -> List[Tuple[int, str]]:
    """(line number, URL) of a file with one URL per line; blank lines and `#` comments are skipped."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            out.append((n, line))
    return out


def _scheme_of(server: object) -> str:
    try:
        match = SCHEME.match(server.url(privacy=True))
    except Exception:
        match = None
    return match.group(1).lower() if match else "unknown"


def _locate_config_problem(where: str, text: str, scrub: Scrubber, schemes: set) -> None:
    """Raise a ConfigError naming the entry of an Apprise configuration that Apprise rejected."""
    try:
        import yaml  # Apprise's own dependency, for its YAML configuration format

        doc = yaml.safe_load(text)
    except Exception:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("urls"), list):
        for i, entry in enumerate(doc["urls"], 1):
            url = entry if isinstance(entry, str) else next(iter(entry), None) if isinstance(entry, dict) else None
            if not isinstance(url, str):
                raise ConfigError(f"config_file: {where}urls entry {i} is not a URL (or a URL with its options)")
            load_url("config_file", f"{where}urls entry {i}", url, scrub, schemes)
        return
    for n, line in _url_lines(text):
        found = URL_LIKE.search(line)
        if found:
            load_url("config_file", f"{where}line {n}", line[found.start():], scrub, schemes)


def _from_config(text: str, path: Optional[str], tags: Optional[List[str]]) -> Tuple[list, Scrubber]:
    """The services of an Apprise configuration (YAML or text), those with any of `tags` when given."""
    where = f"{path}: " if path else ""
    what = path or "the file"
    # Mask whatever the file holds (every word of every line) as well as the URLs Apprise loads from it.
    scrub = Scrubber([line for _, line in _url_lines(text)])
    schemes = known_schemes()
    with captured() as messages:
        try:
            servers, includes = ConfigBase.config_parse(text, asset=asset())
        except Exception as e:
            messages.append((logging.ERROR, f"{type(e).__name__}: {e}"))
            servers, includes = [], []
    errors = [m for level, m in messages if level >= logging.ERROR]
    if includes:
        raise ConfigError(f"config_file: {where}`include` is not supported here; list the URLs in the file itself")
    if errors:
        _locate_config_problem(where, text, scrub, schemes)
        raise ConfigError(f"config_file: {where}Apprise cannot use it: {'; '.join(scrub(m) for m in errors)}")
    if not servers:
        raise ConfigError(f"config_file: {what} holds no Apprise URL; add at least one")
    if tags:
        every = apprise.Apprise(asset=asset())
        for s in servers:
            every.add(s)
        chosen = list(every.find(tag=tags, match_always=True))
        if not chosen:
            raise ConfigError(f"tags: no URL in {what} has any of the tags {', '.join(tags)}")
        servers = [s for s in servers if any(s is c for c in chosen)]
    return servers, scrub


def parse(table: object) -> Config:
    """The configuration, or a ConfigError for the first problem found."""
    if not isinstance(table, dict):
        raise ConfigError("the configuration must be a table")
    for key in table:
        if key not in KEYS:
            raise ConfigError(f"{key}: unknown key; expected one of {', '.join(f'`{k}`' for k in KEYS)}")
    sources = [k for k in SOURCES if k in table]
    if not sources:
        raise ConfigError(
            "urls: missing; give `urls` (a list of Apprise URLs), `urls_file` (a file with one URL per line) or "
            "`config_file` (an Apprise configuration file)"
        )
    if len(sources) > 1:
        shown = [{"config": "config_file"}.get(s, s) for s in sources]
        raise ConfigError(f"{shown[1]}: give only one of `urls`, `urls_file` and `config_file`")
    body = table.get("format", "markdown")
    if body not in FORMATS:
        raise ConfigError("format: expected `markdown`, `html` or `text`")
    attach_plot = table.get("attach_plot", True)
    if not isinstance(attach_plot, bool):
        raise ConfigError("attach_plot: expected true or false")
    state_dir = table.get("state_dir", None)
    if state_dir is None:
        state_dir = default_state_dir()
    elif not isinstance(state_dir, str) or not state_dir.strip():
        raise ConfigError("state_dir: expected a folder path")
    state_dir = os.path.expanduser(state_dir)
    tags = None
    if "tags" in table:
        tags = _string_list("tags", table["tags"], "tag names")
        if sources[0] not in ("config", "config_file"):
            raise ConfigError(
                "tags: only an Apprise configuration file (`config_file`) tags its URLs; leave `tags` out, or "
                "move the URLs into a config_file"
            )

    source = sources[0]
    # (position, label, scheme, server, URL) in order; a label names a position, never the URL.
    loaded = []
    if source in ("config", "config_file"):
        if source == "config":
            if not isinstance(table["config"], str):
                raise ConfigError("config: expected the text of an Apprise configuration (or give `config_file`)")
            path, text = None, table["config"]
        else:
            path, text = _read("config_file", table["config_file"])
        servers, scrub = _from_config(text, path, tags)
        for i, server in enumerate(servers, 1):
            try:
                url = server.url()
            except Exception:
                url = f"{_scheme_of(server)}:{i}"
            loaded.append((i, f"URL {i}", _scheme_of(server), server, url))
        scrub = scrub.extended([u for *_, u in loaded])
    else:
        # (label in errors, label in deliveries, URL)
        entries: List[Tuple[str, str, str]] = []
        if source == "urls" and not isinstance(table["urls"], str):
            urls = _string_list("urls", table["urls"], 'Apprise URLs, such as ["json://localhost:8080/hook"]')
            if not urls:
                raise ConfigError("urls: the list is empty; give at least one Apprise URL")
            entries = [(f"URL {i} of {len(urls)}", f"URL {i}", u.strip()) for i, u in enumerate(urls, 1)]
        else:
            # The text of a urls_file: read by Herald (then it arrives as `urls`), or here.
            if source == "urls":
                path, text = None, table["urls"]
            else:
                path, text = _read("urls_file", table["urls_file"])
            where = f"{path}: " if path else ""
            entries = [(f"{where}line {n}", f"line {n}", u) for n, u in _url_lines(text)]
            if not entries:
                raise ConfigError(f"urls_file: {path or 'the file'} holds no URL; write one Apprise URL per line")
            source = "urls_file"
        scrub = Scrubber([u for *_, u in entries])
        schemes = known_schemes()
        seen = {}
        for i, (label, short, url) in enumerate(entries, 1):
            if url in seen:
                raise ConfigError(f"{source}: {label} repeats {seen[url]}; list each destination once")
            seen[url] = label
            server = load_url(source, label, url, scrub, schemes)
            loaded.append((i, short, SCHEME.match(url).group(1).lower(), server, url))

    services = []
    for position, label, scheme, server, url in loaded:
        one = apprise.Apprise(asset=asset())
        one.add(server)
        services.append(Service(position, label, scheme, one, _fingerprint(url)))
    fingerprint = _fingerprint("\n".join(s.fingerprint for s in services))
    return Config(services, body, attach_plot, state_dir, scrub, fingerprint)
