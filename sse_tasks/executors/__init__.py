"""Executors of other engines: their workers run the work, the hub streams its state."""
