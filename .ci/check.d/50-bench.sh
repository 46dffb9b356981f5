#!/usr/bin/env bash
# Benchmark smoke run: every bench/ script end to end with small counts, so none can rot.
# Quick mode uses lenient thresholds for the timing targets (noise on a shared 2-core CI
# machine); the memory target is the real one. The full run is `python -m bench.run_all`.
set -euo pipefail
cd "$(dirname "$0")/../.."
timeout 300 python -m bench.run_all --quick
