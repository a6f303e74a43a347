"""Speed and memory benchmarks: figures to record, not pass/fail tests (``python -m benchmarks speed``)."""
