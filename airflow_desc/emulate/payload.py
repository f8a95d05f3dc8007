"""A DM-like job payload: burns real CPU, holds real memory, writes real files, fails like DM tasks.

Standard library only: its source is shipped inside job scripts (``python3 - ARGS <<'EOF' ...``),
so nothing needs installing on a cluster. Used by the demo, the tests and the benchmarks in place
of the real DM command line, which the workflow specs keep beside it.

Failure modes (``--fail``), chosen to look like what DC1's operators saw:

==============  =====================================================================
``exit``        exits with ``--exit-code`` (default 1) after printing an error line
``traceback``   raises a Python exception (a DM task's usual death), exit 1
``missing``     opens an input file that does not exist (FileNotFoundError)
``oom``         keeps allocating until the memory limit kills it
``timeout``     keeps burning CPU past any walltime
``segfault``    dies of SIGSEGV, as a crashing C++ extension would
``disk-full``   reports "No space left on device" while writing output, exit 1
==============  =====================================================================

``--fail-rate R`` fails with probability R, drawn from ``--seed`` and the stream name, so a
rerun of the same stream with the same seed fails the same way (set a new seed to "fix" it).
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import os
import random
import sys
import time

FAILURES = ("none", "exit", "traceback", "missing", "oom", "timeout", "segfault", "disk-full")
MB = 1024 * 1024


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the payload's command line."""
    p = argparse.ArgumentParser(prog="desc-payload", description=__doc__.splitlines()[0])
    p.add_argument("--name", default="payload", help="process/stream name, printed and used for the seed")
    p.add_argument("--cpu-seconds", type=float, default=1.0, help="CPU time to burn")
    p.add_argument("--memory-mb", type=float, default=0.0, help="memory to hold while burning")
    p.add_argument(
        "--sleep-seconds", type=float, default=0.0, help="wall time to wait (I/O-like) after burning"
    )
    p.add_argument("--output", action="append", default=[], help="output file to write (repeatable)")
    p.add_argument("--output-mb", type=float, default=0.01, help="size of each output file")
    p.add_argument("--input", action="append", default=[], help="input file that must exist")
    p.add_argument("--fail", choices=FAILURES, default="none", help="how to fail")
    p.add_argument("--fail-rate", type=float, default=1.0, help="probability of failing as --fail says")
    p.add_argument("--seed", default="0", help="seed of the failure draw")
    p.add_argument("--exit-code", type=int, default=1, help="exit code for --fail exit")
    return p.parse_args(argv)


def should_fail(args: argparse.Namespace) -> bool:
    """Decide deterministically from (seed, name) whether this run fails."""
    if args.fail == "none":
        return False
    digest = hashlib.sha256(f"{args.seed}:{args.name}".encode()).digest()
    return bool(random.Random(digest).random() < args.fail_rate)


def hold_memory(mb: float) -> bytearray:
    """Allocate ``mb`` MiB and touch every page so that it counts in RSS."""
    block = bytearray(int(mb * MB))
    for i in range(0, len(block), 4096):
        block[i] = 1
    return block


def burn(seconds: float) -> int:
    """Burn ``seconds`` of CPU time (process time, not wall time)."""
    start = time.process_time()
    x = 0
    while time.process_time() - start < seconds:
        for i in range(10000):
            x += i * i
    return x


def exhaust(how: str, held: bytearray) -> None:
    """Never return: grow memory until killed (``oom``) or burn CPU past any walltime (``timeout``)."""
    hogs = [held]
    while True:
        if how == "oom":
            hogs.append(hold_memory(64))
        else:
            burn(60)


def main(argv: list[str] | None = None) -> int:
    """Run the payload; return its exit code."""
    args = parse_args(argv)
    fail = args.fail if should_fail(args) else "none"
    print(
        f"[{args.name}] start on {os.uname().nodename}: cpu={args.cpu_seconds}s mem={args.memory_mb}MB",
        flush=True,
    )
    for path in args.input:
        if not os.path.exists(path):
            print(f"[{args.name}] input {path} is missing", file=sys.stderr, flush=True)
            raise FileNotFoundError(f"[Errno 2] No such file or directory: '{path}'")
    if fail == "missing":
        open(f"/nonexistent/{args.name}/calexp.fits")  # noqa: SIM115 - the failure is the point
    held = hold_memory(args.memory_mb)
    if fail in ("oom", "timeout"):
        exhaust(fail, held)
    burn(args.cpu_seconds * (0.5 if fail in ("traceback", "segfault", "exit") else 1.0))
    time.sleep(args.sleep_seconds)
    if fail == "traceback":
        raise RuntimeError(f"{args.name}: PSF determination failed: too few stars (3 < 10)")
    if fail == "segfault":
        sys.stdout.flush()
        ctypes.string_at(0)
    if fail == "exit":
        print(f"[{args.name}] FATAL: task failed, exiting {args.exit_code}", file=sys.stderr, flush=True)
        return int(args.exit_code)
    if fail == "disk-full":
        target = args.output[0] if args.output else f"{args.name}.out"
        print(f"OSError: [Errno 28] No space left on device: '{target}'", file=sys.stderr, flush=True)
        return 1
    for path in args.output:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "wb") as f:
            f.write(os.urandom(int(args.output_mb * MB)))
    del held
    print(f"[{args.name}] done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
