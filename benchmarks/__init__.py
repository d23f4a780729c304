"""Benchmarks for kinetix (run as modules, e.g. ``python -m benchmarks.ko_update``)."""
