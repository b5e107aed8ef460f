"""LLM inference behind one vLLM-compatible interface (floor 1)."""
