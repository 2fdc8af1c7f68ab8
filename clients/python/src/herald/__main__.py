"""``python -m herald``: the client's command line for shell scripts.

- ``python -m herald send "text" [--title T] [--level info|warning|error]``: one message through the daemon.
- ``python -m herald flush``: replay the events that stopped processes left in the spool.

It talks to the daemon only (``HERALD_URL``, ``HERALD_TOKEN``); to send without a daemon use ``herald send
--direct``.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from . import send as send_message
from ._client import Client, ConfigError


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m herald", description="Herald's Python client.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_send = sub.add_parser("send", help="send one message through the Herald daemon")
    p_send.add_argument("text", help="the message text ('-' reads it from standard input)")
    p_send.add_argument("--title", default=None, help="title (default: herald)")
    p_send.add_argument("--level", default="info", choices=["info", "warning", "error"])
    p_send.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the daemon (default 10)")
    p_flush = sub.add_parser("flush", help="replay events that stopped processes left in the spool")
    p_flush.add_argument("--timeout", type=float, default=10.0, help="seconds per request (default 10)")
    args = parser.parse_args(argv)

    try:
        client = Client(timeout=args.timeout, flush_timeout=args.timeout, heartbeat_s=0)
    except ConfigError as err:
        print(f"herald: {err}", file=sys.stderr)
        return 2

    if args.command == "flush":
        n = client.replay_spools()
        if client.down:
            print(f"herald: the daemon at {client.endpoint} is unreachable ({client.stats.last_error}); "
                  f"the spool in {client.spool_dir} is kept", file=sys.stderr)
            return 1
        print(f"replayed {n} events")
        return 0

    text = sys.stdin.read() if args.text == "-" else args.text
    send_message(text, args.title, args.level, client=client)
    finished = client.close()
    stats = client.stats
    if stats.rejected:
        print(f"herald: the daemon rejected the message: {stats.last_error}", file=sys.stderr)
        return 2
    if stats.spooled:
        print(f"herald: the daemon at {client.endpoint} is unreachable ({stats.last_error}); the message is kept "
              f"in {client.spool_dir} and goes out when a herald client next reaches the daemon "
              f"(or run `python -m herald flush`)", file=sys.stderr)
        return 0
    if not finished or not stats.sent:
        print(f"herald: no answer from the daemon at {client.endpoint} within {args.timeout:g} s", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
