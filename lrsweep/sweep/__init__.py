"""Sweep definitions: `Sweep` and its checks (spec), the search space (space)."""
