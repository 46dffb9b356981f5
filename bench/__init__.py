"""Benchmarks for closeguard: per-message cost, throughput, churn, memory, drain and policies.

Every script measures closeguard against its baseline in one run, with interleaved rounds,
prints a markdown table and exits non-zero when its target is missed. See ``bench/README.md``.
``bench.harness`` (server processes) and ``bench.rawws`` (a raw RFC 6455 client) serve the
tests and the Autobahn run as well.
"""
