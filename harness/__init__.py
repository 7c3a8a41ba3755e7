"""bnparity harness: case loading, inputs, adapters, workers, comparison, results, report."""

__version__ = "0.1.0"
