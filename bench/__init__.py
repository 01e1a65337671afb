"""Benchmarks (run as scripts, e.g. ``python bench/speed.py``); not part of the installed package."""
