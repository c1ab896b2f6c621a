"""Benchmarks (scripts, not tests): `python -m bench.api`, `python -m bench.watcher`. See docs/performance.md."""
