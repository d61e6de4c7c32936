"""Benchmarks and load tests (they print JSON; see README 'Benchmarks')."""
