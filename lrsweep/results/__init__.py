"""The results store and what reads it: rank, query, best, plots. Never imports Ray."""
