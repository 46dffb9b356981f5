"""Run every benchmark, print one markdown report, exit 1 if any target was missed.

Run: ``python -m bench.run_all`` (full, a few minutes) or ``python -m bench.run_all --quick``
(the CI smoke run: the same code paths with small counts and lenient thresholds where noted).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from . import churn, common, drain, memory, per_message, policies, throughput

BENCHMARKS = {
    "per_message": per_message.main,
    "throughput": throughput.main,
    "churn": churn.main,
    "memory": memory.main,
    "drain": drain.main,
    "policies": policies.main,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="the CI smoke run")
    parser.add_argument(
        "--only", choices=list(BENCHMARKS), action="append", help="run only these (repeatable)"
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    mode = "quick (CI smoke run)" if args.quick else "full"
    print(f"# closeguard benchmarks ({mode})\n\n{common.machine_table()}\n", flush=True)
    status = 0
    for name in args.only or list(BENCHMARKS):
        status |= BENCHMARKS[name](["--quick"] if args.quick else [])
    print("## Summary\n")
    print(common.targets_table(common.CHECKED) + "\n")
    print(f"Total time: {time.monotonic() - started:.0f} s", flush=True)
    return 1 if status else 0


if __name__ == "__main__":
    sys.exit(main())
