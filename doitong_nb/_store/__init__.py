"""L3: results on disk with their provenance, the job journal, the lock file, fsspec stores and the discovery
cache: what lets a re-run replay instead of paying again.
"""
