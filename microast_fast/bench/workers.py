"""The child-process protocol: run one measurement in a fresh process, read its one result line back."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys

# The child prints its result on one stdout line after this marker; anything else it prints is noise.
RESULT_MARKER = "MICROAST_BENCH_RESULT "


def run_worker(spec: dict, timeout: float | None, env: dict | None = None) -> dict:
    """Run ``spec`` in a fresh ``python -m microast_fast.bench.workers`` and return its result; a child that
    fails, times out or is killed gives ``{"status": "skipped", "reason": ...}``."""
    cmd = [sys.executable, "-m", "microast_fast.bench.workers", "--worker", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired:
        return {"status": "skipped", "reason": f"timed out after {timeout:.0f} s (--worker-timeout)"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            result = json.loads(line[len(RESULT_MARKER):])
            if result["status"] != "ok":
                sys.stderr.write(proc.stderr[-3000:])
            return result
    sys.stderr.write(proc.stderr[-3000:])
    if proc.returncode < 0:
        sig = signal.Signals(-proc.returncode).name
        hint = " (out of memory?)" if -proc.returncode == signal.SIGKILL else ""
        return {"status": "skipped", "reason": f"worker killed by {sig}{hint}"}
    last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"status": "skipped", "reason": f"worker exited with {proc.returncode}: {last}"[:500]}


def main(argv: list[str] | None = None) -> int:
    """The child's entry point: one measurement, its result printed after ``RESULT_MARKER``."""
    # Imported here: the parent, which imports this module for run_worker, measures nothing itself.
    from .measure import worker

    parser = argparse.ArgumentParser(prog="python -m microast_fast.bench.workers",
                                     description="One measurement in a fresh process (used by `microast-fast bench`).")
    parser.add_argument("--worker", required=True, metavar="SPEC_JSON")
    result = worker(json.loads(parser.parse_args(argv).worker))
    print(RESULT_MARKER + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
