"""Per-step batch metadata shared by every attention layer of one forward pass."""

from dataclasses import dataclass

import torch


@dataclass
class AttentionMetadata:
    """Flattened-batch layout: the first ``num_decode`` tokens are decode tokens (one per sequence),
    the rest are prefill chunks described by ``cu_seqlens_q``. The ``max_*`` fields are host-side bounds
    that spare GPU kernels a sync (a CUDA graph passes ``max_model_len`` as the decode bound)."""

    slot_mapping: torch.Tensor
    num_decode: int
    decode_context_lens: torch.Tensor
    decode_block_tables: torch.Tensor
    prefill_cu_seqlens_q: torch.Tensor
    prefill_context_lens: torch.Tensor
    prefill_block_tables: torch.Tensor
    decode_max_context_len: int | None = None
    prefill_max_new_tokens: int | None = None
    h2o: object = None  # engine.h2o.H2OStep when kv_policy="h2o", else None
