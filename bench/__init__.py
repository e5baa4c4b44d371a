"""Benchmarks of hookbus against raw baselines; run `python -m bench.<name>` from the repo root."""
