"""Benchmarks: JSON out, a baseline measured in the same run, ratios reported."""
