"""Benchmarks for closeguard: per-message cost, throughput, connection churn and memory.

Every script measures closeguard against the bare app in one run, with interleaved rounds,
prints a markdown table and exits non-zero when its target is missed. See ``bench/README.md``.
"""
