"""L5, a face: the command line (doitong-nb doctor, verify, export, quote) and what it shares with the magics."""
