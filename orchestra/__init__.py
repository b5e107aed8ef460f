"""Composition layer (floor 4)."""
