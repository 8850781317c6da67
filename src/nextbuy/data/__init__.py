"""Data sources: the built-in simulated store and readers for real formats."""
