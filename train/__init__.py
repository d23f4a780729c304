"""Training entry points for kinetix experiments."""
