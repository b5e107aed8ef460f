"""Owns the model and the KV cache; flattens a batch into tensors and runs one forward pass.

On CUDA, decode-only steps replay a CUDA graph captured for the next batch size up (1, 2, 4, 8, then
multiples of 16), with padded rows writing nowhere (slot -1) and attending to nothing (length 0): a 135M
model's decode step is ~30 layers x ~10 small kernels, so launch overhead, not math, is what graphs remove.
``decode_steps`` runs several decode steps in a row without returning to the host: each step's sampled tokens
feed the next on the device, so the host prepares a batch and reads its tokens once per several steps.
"""

import logging
import math
from collections.abc import Callable

import torch

from engine import h2o
from engine.config import EngineConfig, ModelConfig
from engine.models.context import AttentionMetadata
from engine.models.llama import LlamaForCausalLM
from engine.scheduler import Batch
from engine.sequence import Sequence

logger = logging.getLogger(__name__)


def kv_bytes_per_block(cfg: ModelConfig, block_size: int, dtype: torch.dtype) -> int:
    """Bytes of K and V for one block across all layers."""
    return 2 * cfg.num_layers * block_size * cfg.num_kv_heads * cfg.head_dim * torch.finfo(dtype).bits // 8


def h2o_rows(config: EngineConfig) -> int:
    """Rows of the h2o state: one per generating sequence that can hold blocks at once."""
    return min(config.max_num_seqs, config.num_blocks)


def graph_batch_sizes(max_num_seqs: int) -> list[int]:
    """Decode batch sizes captured as CUDA graphs: 1, 2, 4, 8, then every multiple of 16 up to the limit."""
    sizes = [s for s in (1, 2, 4, 8) if s < max_num_seqs] + list(range(16, max_num_seqs + 1, 16))
    if not sizes or sizes[-1] < max_num_seqs:
        sizes.append(max_num_seqs)
    return sizes


class ModelRunner:
    """Runs ``model`` over a scheduled batch; returns final hidden states for the requested rows."""

    def __init__(
        self,
        model: LlamaForCausalLM,
        config: EngineConfig,
        dtype: torch.dtype,
        device: torch.device | None = None,
        cuda_graphs: bool = True,
    ) -> None:
        self.model = model
        self.config = config
        self.device = device or torch.device("cpu")
        cfg = model.config
        # One block past the block manager's: the scratch block multi-step decoding writes finished rows to.
        self.scratch_slot = config.num_blocks * config.block_size
        self.kv_cache = torch.zeros(
            2,
            cfg.num_layers,
            config.num_blocks + 1,
            config.block_size,
            cfg.num_kv_heads,
            cfg.head_dim,
            dtype=dtype,
            device=self.device,
        )
        for i, layer in enumerate(model.layers):
            layer.self_attn.k_cache = self.kv_cache[0, i]
            layer.self_attn.v_cache = self.kv_cache[1, i]
            layer.self_attn.layer_idx = i
        logger.info("KV cache: %d blocks of %d tokens on %s", config.num_blocks, config.block_size, self.device)
        self.on_cuda = self.device.type == "cuda"
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.h2o: h2o.H2OState | None = None
        if config.kv_policy == "h2o":
            self.h2o = h2o.H2OState(
                cfg.num_layers, h2o_rows(config), cfg.num_kv_heads, config.kv_budget, config.recent_window,
                self.device,
            )
            if self.on_cuda and cuda_graphs:
                logger.info("kv_policy='h2o': decode steps run eagerly (no CUDA graphs)")
        elif self.on_cuda and cuda_graphs:
            self.capture_graphs()

    def _tensor(self, data: list, dtype: torch.dtype = torch.long) -> torch.Tensor:
        """A host list as a tensor on the runner's device (through pinned memory on CUDA)."""
        return self._device(torch.tensor(data, dtype=dtype))

    @staticmethod
    def _host_tables(seqs: list) -> torch.Tensor:
        """Block tables as a -1 padded host tensor. A block table only grows by appends until the block manager
        replaces the list, so each sequence keeps its table as a tensor and converts only the new entries."""
        rows = []
        for seq in seqs:
            table = seq.block_table
            cached = seq.table_cache
            if cached is None or cached[0] is not table:
                cached = (table, torch.tensor(table, dtype=torch.long))
            elif cached[1].shape[0] < len(table):
                cached = (table, torch.cat([cached[1], torch.tensor(table[cached[1].shape[0] :], dtype=torch.long)]))
            seq.table_cache = cached
            rows.append(cached[1])
        return torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=-1)

    def _device(self, t: torch.Tensor) -> torch.Tensor:
        return t.pin_memory().to(self.device, non_blocking=True) if self.on_cuda else t

    def _slots(self, seq, start: int, end: int) -> list[int]:
        bs = self.config.block_size
        table = seq.block_table
        return [table[p // bs] * bs + p % bs for p in range(start, end)]

    def prepare(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata, list[int], list[int]]:
        """Token ids, positions and metadata of the flattened batch, the first output row of each sequence
        (decode seqs, then prefill seqs) and the row after its last."""
        ids: list[int] = []
        pos: list[int] = []
        slots: list[int] = []
        for seq in batch.decode:
            p = len(seq) - 1
            ids.append(seq.token_ids[-1])
            pos.append(p)
            if self.h2o is None:
                slots.extend(self._slots(seq, p, p + 1))
            else:  # h2o decode tokens go to per-head slots (engine/h2o.py), not to their position's slot
                slots.append(-1)
        cu = [0]
        for seq in batch.prefill:
            start = seq.num_cached_tokens
            ids.extend(seq.token_ids[start:])
            pos.extend(range(start, len(seq)))
            slots.extend(self._slots(seq, start, len(seq)))
            cu.append(cu[-1] + len(seq) - start)
        empty = torch.empty(0, dtype=torch.long, device=self.device)
        dec, pre = batch.decode, batch.prefill
        meta = AttentionMetadata(
            slot_mapping=self._tensor(slots),
            num_decode=len(dec),
            decode_context_lens=self._tensor([len(s) for s in dec]) if dec else empty,
            decode_block_tables=self._device(self._host_tables(dec)) if dec else empty,
            prefill_cu_seqlens_q=self._tensor(cu),
            prefill_context_lens=self._tensor([len(s) for s in pre]) if pre else empty,
            prefill_block_tables=self._device(self._host_tables(pre)) if pre else empty,
            decode_max_context_len=max((len(s) for s in dec), default=0),
            prefill_max_new_tokens=max((b - a for a, b in zip(cu, cu[1:], strict=False)), default=0),
        )
        if self.h2o is not None:
            meta.h2o = h2o.begin_step(
                self.h2o, dec, pre, cu, meta.decode_block_tables, self.config.block_size, self.device
            )
        nd = len(dec)
        firsts = list(range(nd))
        for i, seq in enumerate(pre):
            firsts.append(nd + cu[i] + max(seq.logits_from - seq.num_cached_tokens, 0))
        ends = list(range(1, nd + 1)) + [nd + c for c in cu[1:]]
        return self._tensor(ids), self._tensor(pos), meta, firsts, ends

    @torch.inference_mode()
    def run(self, batch: Batch) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Final hidden states of every output row, and each sequence's (start, end) slice of them."""
        for src, dst in batch.copies:
            self.kv_cache[:, :, dst] = self.kv_cache[:, :, src]
        if self.graphs and not batch.prefill and len(batch.decode) <= max(self.graphs):
            return self._replay(batch)
        input_ids, positions, meta, firsts, ends = self.prepare(batch)
        hidden = self.model(input_ids, positions, meta)
        if meta.h2o is not None:
            h2o.finish_step(meta.h2o, self.kv_cache, self.config.block_size)
        index: list[int] = []
        spans: list[tuple[int, int]] = []
        for first, end in zip(firsts, ends, strict=True):
            spans.append((len(index), len(index) + end - first))
            index.extend(range(first, end))
        if len(index) == hidden.shape[0]:  # every row is an output row, already in order
            return hidden, spans
        return hidden[self._tensor(index)], spans

    @torch.inference_mode()
    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.logits(hidden)

    @torch.inference_mode()
    def capture_graphs(self) -> None:
        """Capture one decode forward per batch size in ``graph_batch_sizes``, sharing one memory pool."""
        cfg = self.config
        sizes = graph_batch_sizes(cfg.max_num_seqs)
        max_bs = sizes[-1]
        width = math.ceil(cfg.max_model_len / cfg.block_size)
        dev = self.device
        # Positions, slots and context lengths share one tensor, so a multi-step round sets them with one copy.
        step = torch.zeros(3, max_bs, dtype=torch.long, device=dev)
        step[1] = -1
        self._buf = {
            "ids": torch.zeros(max_bs, dtype=torch.long, device=dev),
            "step": step,
            "pos": step[0],
            "slots": step[1],
            "lens": step[2],
            "tables": torch.zeros(max_bs, width, dtype=torch.long, device=dev),
            "out": torch.zeros(max_bs, self.model.config.hidden_size, dtype=self.kv_cache.dtype, device=dev),
        }
        b = self._buf
        empty = torch.empty(0, dtype=torch.long, device=dev)
        pool = None
        for bs in reversed(sizes):
            meta = AttentionMetadata(
                slot_mapping=b["slots"][:bs],
                num_decode=bs,
                decode_context_lens=b["lens"][:bs],
                decode_block_tables=b["tables"][:bs],
                prefill_cu_seqlens_q=empty,
                prefill_context_lens=empty,
                prefill_block_tables=empty,
                decode_max_context_len=cfg.max_model_len,
            )
            b["out"][:bs] = self.model(b["ids"][:bs], b["pos"][:bs], meta)  # warm-up: compiles the kernels
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool):
                b["out"][:bs] = self.model(b["ids"][:bs], b["pos"][:bs], meta)
            pool = graph.pool() if pool is None else pool
            self.graphs[bs] = graph
        torch.cuda.synchronize(dev)
        logger.info("captured CUDA graphs for decode batch sizes %s", sizes)

    def _replay(self, batch: Batch) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        seqs = batch.decode
        n = len(seqs)
        bs = min(s for s in self.graphs if s >= n)
        b = self._buf
        block = self.config.block_size
        rows = []
        for s in seqs:
            last = len(s) - 1
            rows.append([s.token_ids[-1], last, s.block_table[last // block] * block + last % block, len(s)])
        host = torch.tensor(rows, dtype=torch.long)
        host, tables = self._device(host), self._device(self._host_tables(seqs))
        b["ids"][:n].copy_(host[:, 0])
        b["pos"][:n].copy_(host[:, 1])
        b["slots"][:n].copy_(host[:, 2])
        b["lens"][:n].copy_(host[:, 3])
        b["tables"][:n, : tables.shape[1]].copy_(tables)
        if bs > n:
            b["slots"][n:bs].fill_(-1)
            b["lens"][n:bs].fill_(0)
        self.graphs[bs].replay()
        return b["out"][:n], [(i, i + 1) for i in range(n)]

    @torch.inference_mode()
    def decode_steps(
        self,
        seqs: list[Sequence],
        remaining: list[int],
        num_steps: int,
        next_tokens: Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]],
    ) -> tuple[list[list[int]], list[list[float]]]:
        """Decode ``num_steps`` tokens for every sequence, feeding each step's tokens to the next on the device.

        ``remaining[i]`` is how many tokens sequence i may still produce; from then on its row recomputes its last
        position and writes to the scratch block, so its blocks and everything past them stay untouched. Every
        sequence's block table must already cover the positions it decodes. ``next_tokens(logits, step)`` samples
        one step. Returns each sequence's ``num_steps`` tokens and their log-probs (one device sync)."""
        n = len(seqs)
        bs = self.config.block_size
        host = torch.tensor([[s.token_ids[-1], len(s) - 1, r - 1] for s, r in zip(seqs, remaining, strict=True)])
        host = self._device(host)
        ids, start, last_step = host[:, 0], host[:, 1], host[:, 2]
        tables = self._device(self._host_tables(seqs))
        # Every step's positions, slots and context lengths at once: [num_steps, 3, n].
        steps = torch.arange(num_steps, device=self.device)[:, None]
        pos = start + torch.minimum(last_step, steps)
        block = tables.gather(1, (pos // bs).T).T
        slots = torch.where(last_step >= steps, block * bs + pos % bs, self.scratch_slot)
        layout = torch.stack([pos, slots, pos + 1], dim=1)
        graph_size = min((g for g in self.graphs if g >= n), default=0)
        if graph_size:
            b = self._buf
            b["tables"][:n, : tables.shape[1]].copy_(tables)
            b["step"][1:, n:graph_size] = torch.tensor([[-1], [0]], device=self.device)
        max_len = max(len(s) for s in seqs)
        empty = torch.empty(0, dtype=torch.long, device=self.device)
        out_tokens = torch.empty(n, num_steps, dtype=torch.long, device=self.device)
        out_logprobs = torch.empty(n, num_steps, dtype=torch.float32, device=self.device)
        for step in range(num_steps):
            if graph_size:
                b["ids"][:n].copy_(ids)
                b["step"][:, :n].copy_(layout[step])
                self.graphs[graph_size].replay()
                hidden = b["out"][:n]
            else:
                meta = AttentionMetadata(
                    slot_mapping=layout[step, 1],
                    num_decode=n,
                    decode_context_lens=layout[step, 2],
                    decode_block_tables=tables,
                    prefill_cu_seqlens_q=empty,
                    prefill_context_lens=empty,
                    prefill_block_tables=empty,
                    decode_max_context_len=max_len + step,
                )
                hidden = self.model(ids, layout[step, 0], meta)
            ids, logprobs = next_tokens(self.model.logits(hidden), step)
            out_tokens[:, step] = ids
            out_logprobs[:, step] = logprobs
        return out_tokens.tolist(), out_logprobs.tolist()
