"""Benchmarks of trubrics_mp against its peers: ``python -m benchmarks`` (``make bench``)."""
