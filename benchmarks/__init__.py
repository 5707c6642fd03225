"""Benchmarks of sobolev_tf against reference implementations."""
