"""The suite's infrastructure, the bottom layer: errors, atomic writes, ids, the plugin registry, locks, downloads,
archives, acquiring a dataset's or weights' files, the data root, provenance and the timm import.

It imports nothing else of the suite; datasets/, methods/ and the rest of benchmarks/ are built on it.
"""
