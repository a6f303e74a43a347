"""``python -m benchmarks ...``: see :mod:`benchmarks.commands.main`."""
from benchmarks.commands.main import main

main()
