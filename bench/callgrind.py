#!/usr/bin/env python3
"""Server instructions per request, counted by callgrind (the recipe in BENCHMARKS.md).

Usage (after `cargo build --profile profiling` and the harness's `seed` subcommand, which
writes target/bench/seeded.json):

    python3 bench/callgrind.py [--binary target/profiling/stepwise] [--requests 30]

Starts the server under `valgrind --tool=callgrind --instr-atstart=no` on the seeded
PostgreSQL database, warms it up, then counts the instructions of `--requests` Q1 queries
and, separately, of as many `reportStep` mutations on one running run. Prints one line per
scenario: instructions per request. Instruction counts do not depend on what else the
machine is doing, so two builds can be compared on a loaded machine.
"""

import argparse
import glob
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

REPORT_STEP = (
    "mutation($run: ID!, $step: ID!) { reportStep(runId: $run, stepId: $step, "
    'outcome: { status: SUCCESS, pageUrl: "https://app.example.com/bench", executionTimeMs: 420 }) '
    "{ duplicate healthLog { id } run { id stepsCompleted } } }"
)
START_RUN = "mutation($w: ID!) { startRun(workflowId: $w) { id status } }"
ACTIVE = (
    "query { workflows(first: 20, filter: { status: [ACTIVE] }) "
    "{ nodes { id steps { id } } } }"
)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port, token, body):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=(body if isinstance(body, str) else json.dumps(body)).encode(),
        headers={
            "content-type": "application/json",
            "authorization": f"Bearer {token}",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as error:
        sys.exit(f"HTTP {error.code}: {error.read()[:500]!r}")
    if answer.get("errors"):
        sys.exit(f"request failed: {answer['errors']}")
    return answer["data"]


def total_instructions(out_dir, pid):
    """Sums the Ir of every dump callgrind wrote for `pid` (the `totals:` line of each)."""
    total = 0
    for path in glob.glob(os.path.join(out_dir, f"callgrind.out.{pid}*")):
        with open(path, encoding="utf-8", errors="replace") as dump:
            for line in dump:
                match = re.match(r"^totals:\s+(\d+)", line)
                if match:
                    total += int(match.group(1))
    return total


def measure(port, pid, out_dir, label, requests, send):
    before = total_instructions(out_dir, pid)
    subprocess.run(["callgrind_control", "-i", "on", str(pid)], check=True, capture_output=True)
    for i in range(requests):
        send(i)
    subprocess.run(["callgrind_control", "-i", "off", str(pid)], check=True, capture_output=True)
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
    time.sleep(1)
    counted = total_instructions(out_dir, pid) - before
    print(f"{label}: {counted / requests / 1e6:.2f} M instructions per request ({requests} requests)")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default="target/profiling/stepwise")
    parser.add_argument("--seeded", default="target/bench/seeded.json")
    parser.add_argument("--requests", type=int, default=30)
    args = parser.parse_args()
    with open(args.seeded, encoding="utf-8") as file:
        seeded = json.load(file)
    port = free_port()
    out_dir = tempfile.mkdtemp(prefix="callgrind-")
    env = dict(
        os.environ,
        DATABASE_URL=seeded["database_url"],
        JWT_SECRET=seeded["jwt_secret"],
        STEPWISE_LISTEN=f"127.0.0.1:{port}",
        RUST_LOG="warn",
    )
    server = subprocess.Popen(
        [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out_dir}/callgrind.out.%p",
            os.path.abspath(args.binary),
            "serve",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(os.path.join(out_dir, "server.log"), "w"),
    )
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        else:
            sys.exit("the server did not become ready")
        token = seeded["token"]
        q1 = seeded["q1_body"]
        workflows = post(port, token, {"query": ACTIVE})["workflows"]["nodes"]
        workflow = next(w for w in workflows if w["steps"])
        run = post(port, token, {"query": START_RUN, "variables": {"w": workflow["id"]}})
        run_id = run["startRun"]["id"]
        steps = [s["id"] for s in workflow["steps"]]

        def report(i):
            post(port, token, {"query": REPORT_STEP, "variables": {"run": run_id, "step": steps[i % len(steps)]}})

        # Warm-up: connections made, documents parsed and cached, statements prepared.
        for i in range(5):
            post(port, token, q1)
            report(i)
        measure(port, server.pid, out_dir, "Q1", args.requests, lambda _: post(port, token, q1))
        measure(port, server.pid, out_dir, "W1 reportStep", args.requests, report)
    finally:
        server.terminate()
        server.wait(timeout=120)


if __name__ == "__main__":
    main()
