"""Benchmarks of the product: `make bench` runs `python -m bench` (see bench/README.md)."""
