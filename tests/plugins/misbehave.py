#!/usr/bin/env python3
"""A herald plugin that misbehaves on purpose, for the host's tests (standard library only).

Usage: misbehave.py MODE OUT [STATE]
  MODE  good | crash-on-3 | hang-on-3 | garbage-on-3 | unknown-id-on-3 | long-on-3 | ready-on-3 |
        exit-in-handshake:N | version:X.Y | commands | slow:SECONDS
  OUT   file that gets one line `run:seq` per delivery made
  STATE file counting starts (exit-in-handshake:N exits during the first N handshakes)

Counts are per process: a plugin that crashes on its third delivery delivers two more after each restart.
"""
import json
import os
import sys
import time


def send(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main():
    mode, out = sys.argv[1], sys.argv[2]
    state = sys.argv[3] if len(sys.argv) > 3 else None
    starts = 0
    if state:
        try:
            with open(state) as f:
                starts = int(f.read().strip() or "0")
        except FileNotFoundError:
            starts = 0
        with open(state, "w") as f:
            f.write(str(starts + 1))
    hello = json.loads(sys.stdin.readline() or "null")
    if not hello or hello.get("type") != "hello":
        return 2
    print(f"misbehave {mode} start {starts + 1}", file=sys.stderr, flush=True)
    if mode.startswith("exit-in-handshake:") and starts < int(mode.split(":")[1]):
        return 7
    version = mode.split(":")[1] if mode.startswith("version:") else "1.0"
    caps = ["commands"] if mode == "commands" else []
    send({"type": "ready", "name": "misbehave", "version": "0.1.0", "protocol_version": version,
          "capabilities": caps})
    delivered = 0
    for line in sys.stdin:
        message = json.loads(line)
        kind = message.get("type")
        if kind == "shutdown":
            with open(out, "a") as f:
                f.write("shutdown\n")
            return 0
        if kind != "deliver":
            continue
        delivered += 1
        n = message["notification"]
        if delivered == 3:
            if mode == "crash-on-3":
                os._exit(3)
            if mode == "hang-on-3":
                time.sleep(3600)
            if mode == "garbage-on-3":
                sys.stdout.write("Traceback (most recent call last): oops\n")
                sys.stdout.flush()
                continue
            if mode == "long-on-3":
                sys.stdout.write('{"type":"delivered","id":"' + message["id"] + '","receipt":"' + "x" * (2 << 20) + '"}\n')
                sys.stdout.flush()
                continue
            if mode == "ready-on-3":
                send({"type": "ready", "name": "again", "protocol_version": "1.0"})
                continue
            if mode == "unknown-id-on-3":
                send({"type": "delivered", "id": "no-such-id", "receipt": None})
                continue
        if mode.startswith("slow:"):
            time.sleep(float(mode.split(":")[1]))
        receipt = {"seq": n["event"]["seq"]}
        if mode == "commands" and delivered == 1:
            send({"type": "command", "run": n["event"]["run"], "action": "stop", "id": "c1"})
            answer = json.loads(sys.stdin.readline())
            receipt["command"] = answer
        with open(out, "a") as f:
            f.write(f'{n["event"]["run"]}:{n["event"]["seq"]}\n')
        send({"type": "delivered", "id": message["id"], "receipt": receipt})
    return 0


if __name__ == "__main__":
    sys.exit(main())
