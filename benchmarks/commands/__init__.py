"""The command-line interface, one module per command group, assembled by :mod:`benchmarks.commands.main`."""
