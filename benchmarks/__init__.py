"""The shared framework of the suite, in layers (each imports only those below it):

- ``core``: infrastructure (errors, atomic writes, registry, downloads, acquiring files); imports nothing else;
- datasets/ and methods/ (the plugins) are built on ``core``;
- ``evaluation``: extraction, cache, search, metrics, results, reproduce; ``training``: the training loops;
- ``reports`` (tables, plots, comparisons), ``commands`` (the CLI) and ``speed`` (speed benchmarks) on top.

The evaluator finds the plugins through registries (``methods.load_plugins``, ``datasets.load_plugins``).
"""
