"""The shared evaluator: extraction under a method's test protocol, the descriptor cache, search, compact
signatures, metrics, stored results, and reproducing a paper's table. Built on datasets/ and methods/."""
