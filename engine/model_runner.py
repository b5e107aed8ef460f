"""Owns the model and the KV cache; flattens a batch into tensors and runs one forward pass."""

import logging

import torch

from engine.config import EngineConfig, ModelConfig
from engine.models.context import AttentionMetadata
from engine.models.llama import LlamaForCausalLM
from engine.scheduler import Batch

logger = logging.getLogger(__name__)


def kv_bytes_per_block(cfg: ModelConfig, block_size: int, dtype: torch.dtype) -> int:
    """Bytes of K and V for one block across all layers."""
    return 2 * cfg.num_layers * block_size * cfg.num_kv_heads * cfg.head_dim * torch.finfo(dtype).bits // 8


class ModelRunner:
    """Runs ``model`` over a scheduled batch; returns final hidden states for the requested rows."""

    def __init__(self, model: LlamaForCausalLM, config: EngineConfig, dtype: torch.dtype) -> None:
        self.model = model
        self.config = config
        cfg = model.config
        self.kv_cache = torch.zeros(
            2,
            cfg.num_layers,
            config.num_blocks,
            config.block_size,
            cfg.num_kv_heads,
            cfg.head_dim,
            dtype=dtype,
        )
        for i, layer in enumerate(model.layers):
            layer.self_attn.k_cache = self.kv_cache[0, i]
            layer.self_attn.v_cache = self.kv_cache[1, i]
        logger.info("KV cache: %d blocks of %d tokens", config.num_blocks, config.block_size)

    @staticmethod
    def _tables(seqs: list) -> torch.Tensor:
        width = max(len(s.block_table) for s in seqs)
        return torch.tensor(
            [s.block_table + [-1] * (width - len(s.block_table)) for s in seqs], dtype=torch.long
        )

    def _slots(self, seq, start: int, end: int) -> list[int]:
        bs = self.config.block_size
        table = seq.block_table
        return [table[p // bs] * bs + p % bs for p in range(start, end)]

    def prepare(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata, list[int]]:
        """Token ids, positions and metadata of the flattened batch, plus the first output row of each
        sequence (decode seqs, then prefill seqs), whose output rows run to the next one's start."""
        ids: list[int] = []
        pos: list[int] = []
        slots: list[int] = []
        for seq in batch.decode:
            p = len(seq) - 1
            ids.append(seq.token_ids[-1])
            pos.append(p)
            slots.extend(self._slots(seq, p, p + 1))
        cu = [0]
        for seq in batch.prefill:
            start = seq.num_cached_tokens
            ids.extend(seq.token_ids[start:])
            pos.extend(range(start, len(seq)))
            slots.extend(self._slots(seq, start, len(seq)))
            cu.append(cu[-1] + len(seq) - start)
        empty = torch.empty(0, dtype=torch.long)
        dec, pre = batch.decode, batch.prefill
        meta = AttentionMetadata(
            slot_mapping=torch.tensor(slots, dtype=torch.long),
            num_decode=len(dec),
            decode_context_lens=torch.tensor([len(s) for s in dec], dtype=torch.long) if dec else empty,
            decode_block_tables=self._tables(dec) if dec else empty,
            prefill_cu_seqlens_q=torch.tensor(cu, dtype=torch.long),
            prefill_context_lens=torch.tensor([len(s) for s in pre], dtype=torch.long) if pre else empty,
            prefill_block_tables=self._tables(pre) if pre else empty,
        )
        rows = list(range(len(dec)))
        nd = len(dec)
        for i, seq in enumerate(pre):
            rows.append(nd + cu[i] + max(seq.logits_from - seq.num_cached_tokens, 0))
        return torch.tensor(ids, dtype=torch.long), torch.tensor(pos, dtype=torch.long), meta, rows

    @torch.inference_mode()
    def run(self, batch: Batch) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Final hidden states of every output row, and each sequence's (start, end) slice of them."""
        for src, dst in batch.copies:
            self.kv_cache[:, :, dst] = self.kv_cache[:, :, src]
        input_ids, positions, meta, first_rows = self.prepare(batch)
        hidden = self.model(input_ids, positions, meta)
        ends = list(range(1, len(batch.decode) + 1))
        nd = len(batch.decode)
        ends += [nd + int(c) for c in meta.prefill_cu_seqlens_q[1:].tolist()]
        index: list[int] = []
        spans: list[tuple[int, int]] = []
        for first, end in zip(first_rows, ends, strict=False):
            spans.append((len(index), len(index) + end - first))
            index.extend(range(first, end))
        return hidden[torch.tensor(index, dtype=torch.long)], spans

    @torch.inference_mode()
    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.logits(hidden)
