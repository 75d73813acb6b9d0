"""Shipped network weights and their model cards (none yet: linear options only)."""
