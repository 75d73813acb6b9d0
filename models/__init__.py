"""The shipped model bank: network weights (safetensors) and their cards (JSON)."""
