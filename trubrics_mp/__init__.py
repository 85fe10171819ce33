"""trubrics-mp: a fork-safe Trubrics client for multi-process servers."""

__version__ = "0.1.0"
