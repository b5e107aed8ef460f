"""Repeated sampling, verifiers, selection and Archon (floor 3)."""
