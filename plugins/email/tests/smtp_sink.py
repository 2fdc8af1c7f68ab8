"""An aiosmtpd handler for herald-email's tests: every received mail becomes one JSON line.

Run as `python3 -m aiosmtpd -n -l 127.0.0.1:PORT -c smtp_sink.JsonSink OUT.jsonl` with this folder on
PYTHONPATH. Python's own `email` package parses the MIME, so the tests assert on what a mail client sees:
the envelope, the decoded subject and headers, each part's type, Content-ID and decoded content, whether
the session was under TLS, and the client's address (the same address for several mails shows that the
connection was reused). Recipients starting with `reject` get 550 and with `busy` get 451.

aiosmtpd's command line cannot require a login, so for the login test this file also runs as a script:
`python3 smtp_sink.py PORT OUT.jsonl CERT KEY USER PASSWORD` serves the same handler on 127.0.0.1:PORT with
STARTTLS and AUTH required (only USER/PASSWORD succeed) until it is killed.
"""

import base64
import email
import email.policy
import json


class JsonSink:
    def __init__(self, path):
        self.path = path

    @classmethod
    def from_cli(cls, parser, *args):
        if len(args) != 1:
            parser.error("JsonSink takes one argument: the JSON-lines file to append to")
        return cls(args[0])

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("reject"):
            return "550 5.1.1 mailbox unavailable"
        if address.startswith("busy"):
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        parts = []
        for part in msg.walk():
            entry = {
                "content_type": part.get_content_type(),
                "content_id": part.get("Content-ID"),
                "disposition": part.get_content_disposition(),
                "filename": part.get_filename(),
            }
            if part.is_multipart():
                entry["multipart"] = True
            elif part.get_content_maintype() == "text":
                entry["text"] = part.get_content()
            else:
                entry["base64"] = base64.b64encode(part.get_payload(decode=True)).decode()
            parts.append(entry)
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "subject": str(msg["Subject"]),
            "headers": {k.lower(): str(v) for k, v in msg.items()},
            "tls": session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None,
            "peer": list(session.peer),
            "login": session.auth_data.login.decode() if session.authenticated and session.auth_data else None,
            "parts": parts,
        }
        with open(self.path, "a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")
        return "250 OK"


def _serve_with_login(port, out, cert, key, user, password):
    import ssl
    import threading

    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = auth_data.login == user.encode() and auth_data.password == password.encode()
        return AuthResult(success=ok, handled=False, auth_data=auth_data)

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    controller = Controller(
        JsonSink(out),
        hostname="127.0.0.1",
        port=int(port),
        tls_context=context,
        require_starttls=True,
        authenticator=authenticator,
        auth_required=True,
    )
    controller.start()
    threading.Event().wait()


if __name__ == "__main__":
    import sys

    _serve_with_login(*sys.argv[1:7])
