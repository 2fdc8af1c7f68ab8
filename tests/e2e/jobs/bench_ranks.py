"""Benchmark of distributed jobs (issue 13): 64 simulated ranks of one job, each posting an ``epoch_ended`` every
second to one ``herald serve`` with a webhook notifier. Prints the daemon's CPU use, the latency from the last
rank's ``epoch_ended`` (rank 0's, posted after the 63 others) to the job's notification at the webhook (p50,
p99, max), the latency of the job's end, and the Python client's cost per event on a non-zero rank.

Run: ``.venv/bin/python tests/e2e/jobs/bench_ranks.py target/release/herald [epochs]``. Standard library only.
"""

from __future__ import annotations

import http.client
import http.server
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

RANKS = 64
MADE = 1 << 48


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


arrivals: dict = {}


class Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        arrivals[(body["run"], body["seq"], body["type"])] = time.monotonic()
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stamp() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def main() -> None:
    herald_bin = sys.argv[1]
    epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    sink = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    tmp = tempfile.mkdtemp(prefix="herald-bench-ranks-")
    port = free_port()
    with open(os.path.join(tmp, "herald.toml"), "w") as f:
        f.write(
            f'[daemon]\nlisten = "127.0.0.1:{port}"\nsocket = ""\nstate_dir = "{tmp}/state"\nstall_after = "60s"\n\n'
            f'[[notifier]]\nname = "hook"\ntype = "webhook"\nurl = "http://127.0.0.1:{sink.server_address[1]}/"\n'
        )
    daemon = subprocess.Popen([herald_bin, "--config", os.path.join(tmp, "herald.toml"), "serve"],
                              stderr=open(os.path.join(tmp, "daemon.log"), "w"))
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/healthz")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the daemon did not start")
            time.sleep(0.05)
        conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(RANKS)]
        host = socket.gethostname()
        runs = [f"bench-r{r}" for r in range(RANKS)]

        def post(rank: int, seq: int, type_: str, payload: dict) -> None:
            event = {"v": 1, "run": runs[rank], "seq": seq, "time": stamp(), "type": type_, **payload}
            conns[rank].request("POST", "/v1/events", json.dumps(event), {"Content-Type": "application/json"})
            r = conns[rank].getresponse()
            r.read()
            assert r.status == 202, r.status

        for rank in range(RANKS):
            post(rank, 0, "run_started", {"name": "bench", "host": host, "pid": os.getpid(), "rank": rank,
                                          "job": "bench-job", "world_size": RANKS, "n_epochs": epochs,
                                          "batches_per_epoch": 100, "metric_names": []})
        sent: dict = {}
        cpu0, wall0 = cpu_s(daemon.pid), time.monotonic()
        for e in range(epochs):
            t_next = wall0 + e + 1
            for rank in list(range(1, RANKS)) + [0]:
                if rank == 0:
                    sent[e] = time.monotonic()
                post(rank, e + 1, "epoch_ended", {"epoch": e, "n_epochs": epochs, "train_loss": 1.0 / (e + 1),
                                                  "elapsed_s": 1.0 + (0.001 * rank)})
            time.sleep(max(0.0, t_next - time.monotonic()))
        cpu1, wall1 = cpu_s(daemon.pid), time.monotonic()
        end_sent = 0.0
        for rank in list(range(1, RANKS)) + [0]:
            end_sent = time.monotonic()
            post(rank, epochs + 1, "run_finished", {"status": "completed", "reason": "done", "duration_s": epochs})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            done = all((runs[0], e + 1, "epoch_ended") in arrivals for e in range(epochs))
            ended = [t for (run, seq, ty), t in arrivals.items() if ty == "run_finished" and seq >= MADE]
            if done and ended:
                break
            time.sleep(0.05)
        lat = sorted((arrivals[(runs[0], e + 1, "epoch_ended")] - sent[e]) * 1000 for e in range(epochs))
        p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]  # noqa: E731
        print(f"ranks {RANKS}, epochs {epochs}, {RANKS * epochs} epoch_ended posted")
        print(f"daemon CPU: {100 * (cpu1 - cpu0) / (wall1 - wall0):.1f}% of one core over {wall1 - wall0:.1f} s")
        print(f"last rank's epoch_ended -> job notification: p50 {p(0.5):.1f} ms, p99 {p(0.99):.1f} ms, "
              f"max {lat[-1]:.1f} ms")
        if ended:
            print(f"last rank's run_finished -> job end: {(min(ended) - end_sent) * 1000:.0f} ms "
                  f"(made as the last rank's end comes in)")
        print("latencies (ms, by epoch):", " ".join(f"{(arrivals[(runs[0], e + 1, 'epoch_ended')] - sent[e]) * 1000:.0f}" for e in range(epochs)))
        others = [k for k in arrivals if k[0] != runs[0]]
        print(f"notifications from non-zero ranks: {len(others)}")
    finally:
        daemon.terminate()
        daemon.wait(10)

    # The client's cost per event on a non-zero rank: the call only queues.
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../../../clients/python/src"))
    os.environ.update({"HERALD_JOB": "bench", "RANK": "1", "WORLD_SIZE": str(RANKS)})
    import herald  # noqa: PLC0415

    client = herald.Client(f"http://127.0.0.1:{free_port()}", spool_dir=os.path.join(tmp, "spool"))
    run = herald.Run("bench", client=client).start(n_epochs=10**6)
    n = 20000
    t0 = time.perf_counter()
    for e in range(n):
        run.epoch_ended(train_loss=0.5, elapsed_s=1.0, epoch=e)
    per_epoch = (time.perf_counter() - t0) / n * 1e6
    t0 = time.perf_counter()
    for i in range(n):
        run.batch_ended(0.5, lr=0.01)
    per_batch = (time.perf_counter() - t0) / n * 1e6
    print(f"client on rank 1: epoch_ended {per_epoch:.1f} us per call; batch_ended (kept off the wire) "
          f"{per_batch:.2f} us per call")


if __name__ == "__main__":
    main()
