"""Benchmarks of Pforte's connection hot path, run side by side with peers (see README)."""
