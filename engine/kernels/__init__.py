"""The three attention ops every model calls: store K/V, prefill attention, decode attention.

The functions exported here are the torch reference implementations (CPU and tests); a Triton
implementation with the same signatures can be swapped in per device.
"""

from engine.kernels.reference import decode_attention, prefill_attention, store_kv

__all__ = ["store_kv", "prefill_attention", "decode_attention"]
