"""Benchmarks for fusiongraph: a fake OpenAI-compatible upstream and the overhead measurements."""
