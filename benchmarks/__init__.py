"""The shared framework of the suite: evaluator, metrics, search, results, tables and the CLI.

Method and dataset plugins import this package; it finds them through registries
(``methods.METHODS``, ``datasets.DATASETS``).
"""
