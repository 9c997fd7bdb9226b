"""Benchmarks for fusiongraph: a fake OpenAI-compatible upstream and the overhead measurements."""

from pathlib import Path

RESULTS_DIR = Path(__file__).parent / "results"  # git-ignored: samples, tables, server logs
