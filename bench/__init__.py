"""pyswarm's benchmarks: `python -m bench sim|idle` (see bench/__main__.py). Not part of the test run."""
