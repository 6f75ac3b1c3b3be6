"""Benchmarks: each figure is measured beside its floor in the same run and reported as a ratio."""
