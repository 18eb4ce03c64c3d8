"""Benchmarks and the crash drill (not part of the test suite; see bench/README.md)."""
