"""Benchmarks that run against the real local stack (see docs/benchmarks.md)."""
