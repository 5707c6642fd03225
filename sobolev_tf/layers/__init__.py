"""Sonnet networks of the experiments."""
