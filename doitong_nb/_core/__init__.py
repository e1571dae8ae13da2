"""L1, pure: the error tree, redaction, key checks, environment names, the settings table, requests, results,
steps, rate limits, polling and grid axes. No I/O, no clock, no environment reads: every layer above may use it.
"""
