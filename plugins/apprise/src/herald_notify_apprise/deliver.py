"""One delivery attempt: a Herald notification to the Apprise URLs that do not have it yet.

Herald's `title` becomes Apprise's title, the rendering chosen by `format` its body (with the matching
`body_format`, so Apprise converts it for each service), the event its notify type (`notify_type`) and the
loss curve an in-memory attachment. Each pending URL is notified through its own `apprise.Apprise`, so each
has its own outcome; several go out in parallel. The result is `delivered` with a receipt listing the
positions that have the notification, or a retryable `failed` naming each failed URL by position and scheme
with Apprise's reason (scrubbed of URL parts). It makes one attempt: the daemon owns retries and backoff.
"""

from __future__ import annotations

import base64
import binascii
import concurrent.futures
import logging
import os
import tempfile
from typing import List, Optional, Tuple

import apprise
from apprise.attachment.file import AttachFile

from .config import Config, Service
from .progress import Progress

# The longest reason kept from Apprise per URL, in characters.
MAX_REASON = 500


def notify_type(event: dict) -> str:
    """Apprise's notify type for a Herald event: success for a completed run, failure for a failed or lost
    one, warning for a stall, a stopped run and warning messages, info for the rest."""
    kind = event.get("type")
    if kind in ("run_failed", "run_lost"):
        return apprise.NotifyType.FAILURE
    if kind == "run_finished":
        status = event.get("status")
        if status == "completed":
            return apprise.NotifyType.SUCCESS
        if status == "failed":
            return apprise.NotifyType.FAILURE
        return apprise.NotifyType.WARNING
    if kind == "run_stalled":
        return apprise.NotifyType.WARNING
    if kind == "message":
        level = event.get("level", "info")
        if level == "warning":
            return apprise.NotifyType.WARNING
        if level == "error":
            return apprise.NotifyType.FAILURE
    return apprise.NotifyType.INFO


class Malformed(ValueError):
    """The notification lacks what a delivery needs (a permanent failure: no retry brings it)."""


class Message:
    """What goes to every URL for one notification."""

    def __init__(self, notification: object, config: Config):
        if not isinstance(notification, dict):
            raise Malformed("the notification is not an object")
        event = notification.get("event")
        if not isinstance(event, dict):
            raise Malformed("the notification has no event")
        self.run = event.get("run")
        self.seq = event.get("seq")
        if not isinstance(self.run, str) or not isinstance(self.seq, int) or isinstance(self.seq, bool):
            raise Malformed("the event has no run or seq")
        title = notification.get("title")
        body = notification.get(config.body)
        if not isinstance(body, str) or not body:
            body = notification.get("text")
        if not isinstance(title, str) or not isinstance(body, str):
            raise Malformed(f"the notification has no title or {config.body} rendering")
        self.title = title
        self.body = body
        self.body_format = config.body_format
        self.notify_type = notify_type(event)
        self.image = None
        image = notification.get("image")
        if config.attach_plot and isinstance(image, dict) and isinstance(image.get("bytes"), str):
            try:
                data = base64.b64decode(image["bytes"], validate=True)
            except (binascii.Error, ValueError):
                raise Malformed("the image is not valid base64") from None
            name = image.get("filename") if isinstance(image.get("filename"), str) else "loss.png"
            mime = image.get("mime") if isinstance(image.get("mime"), str) else "image/png"
            self.image = (data, name, mime)

    def __enter__(self) -> "Message":
        # The image goes to a private file for the delivery: some Apprise services (form://, email) read
        # attachments by path only.
        self.path = None
        if self.image is not None:
            data, name, _ = self.image
            suffix = os.path.splitext(name)[1][:16]
            fd, self.path = tempfile.mkstemp(prefix="herald-apprise-", suffix=suffix)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        return self

    def __exit__(self, *exc) -> None:
        if self.path is not None:
            try:
                os.unlink(self.path)
            except OSError:
                pass
            self.path = None

    def attachment(self) -> Optional[AttachFile]:
        # A fresh one per URL: an attachment is a stream, and URLs go out in parallel.
        if getattr(self, "path", None) is None:
            return None
        _, name, mime = self.image
        return AttachFile(self.path, name=name, mimetype=mime)


def send_one(service: Service, message: Message, config: Config) -> Optional[str]:
    """Notify one URL; None when it succeeded, else Apprise's reason (scrubbed)."""
    try:
        result = service.apprise.notify(
            body=message.body,
            title=message.title,
            notify_type=message.notify_type,
            body_format=message.body_format,
            attach=message.attachment(),
        )
    except Exception as e:  # Apprise reports failures in its result; an exception is a bug worth a retry
        return config.scrub(f"apprise raised {type(e).__name__}: {e}")[:MAX_REASON]
    if result:
        return None
    reasons = []
    for service_result in result:
        for entry in service_result.logs():
            if getattr(logging, str(entry.level).upper(), 0) >= logging.WARNING:
                reasons.append(entry.message)
    for entry in result.call_logs():
        if getattr(logging, str(entry.level).upper(), 0) >= logging.WARNING:
            reasons.append(entry.message)
    status = getattr(result, "status", None)
    reason = "; ".join(dict.fromkeys(config.scrub(r) for r in reasons))
    if not reason:
        reason = f"apprise reported {status.name.lower() if status is not None else 'failure'} without a reason"
    return reason[:MAX_REASON]


def deliver(
    message: Message, config: Config, progress: Progress, fanout: concurrent.futures.Executor
) -> Tuple[bool, object]:
    """(True, receipt) when every URL has the notification, else (False, the failure's message)."""
    total = len(config.services)
    done = progress.load(message.run, message.seq) if total > 1 else set()
    before = set(done)
    pending = [s for s in config.services if s.position not in done]
    failures: List[Tuple[Service, str]] = []
    if len(pending) == 1:
        outcomes = [(pending[0], send_one(pending[0], message, config))]
    else:
        futures = {fanout.submit(send_one, s, message, config): s for s in pending}
        outcomes = []
        for future in concurrent.futures.as_completed(futures):
            service = futures[future]
            reason = future.result()
            outcomes.append((service, reason))
            if reason is None:
                done.add(service.position)
                if len(done) < total:
                    # Remember it now: a crash or a hang of another URL must not resend to this one.
                    progress.save(message.run, message.seq, done, total)
    for service, reason in outcomes:
        if reason is None:
            done.add(service.position)
        else:
            failures.append((service, reason))
    if not failures:
        if total > 1:
            progress.clear(message.run, message.seq)
        return True, {"urls": total, "delivered": sorted(done), "this_attempt": sorted(done - before)}
    if total > 1 and done:
        progress.save(message.run, message.seq, done, total)
    failures.sort(key=lambda f: f[0].position)
    detail = "; ".join(f"{service}: {reason}" for service, reason in failures)
    text = f"{len(failures)} of {total} Apprise URLs failed: {detail}"
    if done:
        text += f" ({len(done)} delivered; the retry goes only to the failed ones)"
    return False, text
