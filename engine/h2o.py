"""H2O (Heavy-Hitter Oracle) KV eviction: per-(layer, KV head) scores, attention with probabilities, compaction.

With ``kv_policy="h2o"`` a generating sequence keeps at most ``kv_budget`` tokens per (layer, KV head): the
``recent_window`` newest tokens plus the tokens with the largest accumulated attention mass (summed over every
query seen so far and over the query heads of the KV head's group). Each such sequence owns ``S = kv_budget + 1``
cache slots (its first ``ceil(S / block_size)`` blocks) and one row of the state tensors below:

- ``score[layer, row, head, slot]``: accumulated attention probability of the token in that slot;
- ``pos[layer, row, head, slot]``: the token position held there (-1: empty), which protects the recent window;
- ``next_slot[layer, row, head]``: where the next token goes once the sequence is past ``kv_budget`` tokens.

K is stored after RoPE, so the order of slots does not matter to attention: head h may keep token t in slot s
while another head keeps a different token there. A decode step writes the new token of each head into that
head's free slot, attends over ``min(len, S)`` slots (so over ``kv_budget`` kept tokens plus the new one),
adds the step's probabilities to the scores and, once all ``S`` slots are full, frees the lowest-scored slot
outside the recent window per head (that slot takes the next token). A prefill computes the column sums of its
causal attention probabilities explicitly and, when the prompt is longer than ``kv_budget``, moves each head's
kept tokens into the first ``kv_budget`` slots; the block manager then frees the blocks past the cap.

Everything here is torch ops (no Triton): it runs the same on CPU and CUDA tensors, eagerly (no CUDA graphs).
"""

from dataclasses import dataclass, field

import torch

from engine import kernels
from engine.kernels.reference import _gather_context

# Query rows per chunk when the prefill's column masses are formed ([heads, rows, prompt] fp32 at once).
_PREFILL_CHUNK = 256


class H2OState:
    """Scores, positions and free slots of every h2o sequence, one row per sequence (see module docstring)."""

    def __init__(
        self, num_layers: int, num_rows: int, num_kv_heads: int, budget: int, recent: int, device: torch.device
    ) -> None:
        self.budget, self.recent, self.slots = budget, recent, budget + 1
        shape = (num_layers, num_rows, num_kv_heads, self.slots)
        self.score = torch.zeros(shape, dtype=torch.float32, device=device)
        self.pos = torch.full(shape, -1, dtype=torch.int32, device=device)
        self.next_slot = torch.zeros(shape[:3], dtype=torch.long, device=device)
        self.heads = torch.arange(num_kv_heads, device=device)
        self.layers = torch.arange(num_layers, device=device)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.score, self.pos, self.next_slot))


@dataclass
class H2OStep:
    """What one forward pass needs: decode rows' write slots and context sizes, prefill rows to score."""

    state: H2OState
    num_decode: int = 0
    rows: torch.Tensor | None = None  # [B] state rows of the decode sequences
    write_slots: torch.Tensor | None = None  # [layers, B, kv_heads] flat cache slots of the new tokens
    ctx: torch.Tensor | None = None  # [B] slots each decode sequence attends over
    max_ctx: int = 0
    tables: torch.Tensor | None = None
    full: list[int] = field(default_factory=list)  # decode indices whose S slots are all taken (evict after)
    positions: list[int] = field(default_factory=list)  # decode sequences' new positions
    prefill: list[tuple[int, int, object]] = field(default_factory=list)  # (start, end, seq) in prefill rows
    mass: list[torch.Tensor] = field(default_factory=list)  # per prefill entry: [layers, kv_heads, P]


def begin_step(
    state: H2OState,
    decode: list,
    prefill: list,
    cu: list[int],
    tables: torch.Tensor,
    block_size: int,
    device: torch.device,
) -> H2OStep:
    """Record each decode sequence's new token in its slot (position, score 0) and find the cache slots it is
    written to; list the generating prefill sequences whose attention mass must be measured."""
    step = H2OStep(state, num_decode=len(decode))
    if decode:
        s = state.slots
        positions = [len(seq) - 1 for seq in decode]
        rows = torch.tensor([seq.kv_row for seq in decode], device=device)
        p = torch.tensor(positions, device=device)
        ns = state.next_slot[:, rows]  # [L, B, H]
        ns = torch.where((p < s)[None, :, None], p[None, :, None].expand_as(ns), ns)
        pos = state.pos[:, rows]
        pos.scatter_(3, ns[..., None], p.to(torch.int32)[None, :, None, None].expand(*ns.shape, 1))
        state.pos[:, rows] = pos
        score = state.score[:, rows]
        score.scatter_(3, ns[..., None], 0.0)
        state.score[:, rows] = score
        b = torch.arange(len(decode), device=device)[None, :, None]
        step.write_slots = tables[b, ns // block_size] * block_size + ns % block_size
        step.rows, step.tables, step.positions = rows, tables, positions
        step.ctx = torch.clamp(p + 1, max=s)
        step.max_ctx = min(max(positions) + 1, s)
        step.full = [i for i, q in enumerate(positions) if q + 1 >= s]
    for i, seq in enumerate(prefill):
        if seq.kv_row >= 0:
            step.prefill.append((cu[i], cu[i + 1], seq))
            step.mass.append(torch.zeros(len(state.layers), len(state.heads), cu[i + 1] - cu[i], device=device))
    return step


def decode_with_probs(
    query: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    tables: torch.Tensor,
    ctx: torch.Tensor,
    max_ctx: int,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode attention over the first ``ctx[i]`` slots of each sequence, explicitly: the output
    ``[B, heads, D]`` and the probabilities summed over each KV head's query group ``[B, kv_heads, L]``
    (``L >= max_ctx``, slots past ``ctx[i]`` have probability 0)."""
    b, hq, d = query.shape
    h = k_cache.shape[2]
    k = _gather_context(k_cache, tables, max_ctx).float()  # [B, H, L, D]
    v = _gather_context(v_cache, tables, max_ctx).float()
    logits = torch.matmul(query.float().view(b, h, hq // h, d), k.transpose(-1, -2)) * scale  # [B, H, G, L]
    pad = torch.arange(k.shape[2], device=query.device)[None, :] >= ctx[:, None]
    probs = logits.masked_fill_(pad[:, None, None, :], float("-inf")).softmax(-1)
    out = torch.matmul(probs, v).view(b, hq, d).to(query.dtype)
    return out, probs.sum(2)


def causal_column_mass(query: torch.Tensor, key: torch.Tensor, scale: float) -> torch.Tensor:
    """Column sums of the causal softmax attention of ``query`` ``[P, heads, D]`` over ``key`` ``[P, kv_heads,
    D]`` (the same P tokens), summed over each KV head's query group: ``[kv_heads, P]``, in fp32."""
    n, hq, d = query.shape
    h = key.shape[1]
    q = query.float().view(n, h, hq // h, d).permute(1, 2, 0, 3)  # [H, G, P, D]
    k = key.float().permute(1, 2, 0)  # [H, D, P]
    cols = torch.arange(n, device=query.device)
    mass = torch.zeros(h, n, dtype=torch.float32, device=query.device)
    for a in range(0, n, _PREFILL_CHUNK):
        rows = cols[a : a + _PREFILL_CHUNK]
        logits = torch.matmul(q[:, :, a : a + _PREFILL_CHUNK], k[:, None]) * scale  # [H, G, c, P]
        future = cols[None, :] > rows[:, None]
        mass += logits.masked_fill_(future, float("-inf")).softmax(-1).sum((1, 2))
    return mass


def attention(attn, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, meta) -> torch.Tensor:
    """The h2o variant of one attention layer: per-head writes and explicit probabilities for decode rows,
    the ordinary prefill op plus measured column masses for generating prefill rows."""
    step: H2OStep = meta.h2o
    nd = meta.num_decode
    parts = []
    if nd:
        h, d = k.shape[1], k.shape[2]
        heads = step.state.heads[None, :]
        slots = step.write_slots[layer]
        attn.k_cache.view(-1, h, d).index_put_((slots, heads), k[:nd])
        attn.v_cache.view(-1, h, d).index_put_((slots, heads), v[:nd])
        out, mass = decode_with_probs(
            q[:nd], attn.k_cache, attn.v_cache, step.tables, step.ctx, step.max_ctx, attn.scale
        )
        w = min(mass.shape[-1], step.state.slots)
        step.state.score[layer][:, :, :w].index_add_(0, step.rows, mass[..., :w])
        parts.append(out)
    if q.shape[0] > nd:
        kernels.store_kv(k[nd:], v[nd:], attn.k_cache, attn.v_cache, meta.slot_mapping[nd:])
        parts.append(
            kernels.prefill_attention(
                q[nd:],
                attn.k_cache,
                attn.v_cache,
                meta.prefill_cu_seqlens_q,
                meta.prefill_context_lens,
                meta.prefill_block_tables,
                attn.scale,
                max_new_tokens=meta.prefill_max_new_tokens,
            )
        )
        for (a, b, _), mass in zip(step.prefill, step.mass, strict=True):
            mass[layer] = causal_column_mass(q[nd + a : nd + b], k[nd + a : nd + b], attn.scale)
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def kept_positions(mass: torch.Tensor, budget: int, recent: int) -> torch.Tensor:
    """Per (layer, head) of ``mass`` ``[..., P]`` (P > budget): the ``recent`` last positions and the
    ``budget - recent`` earlier ones of largest mass, ascending, ``[..., budget]``."""
    n = mass.shape[-1]
    heavy = mass[..., : n - recent].topk(budget - recent, dim=-1).indices
    tail = torch.arange(n - recent, n, device=mass.device).expand(*mass.shape[:-1], recent)
    return torch.cat([heavy, tail], dim=-1).sort(dim=-1).values


def compact(kv_cache: torch.Tensor, table: list[int], keep: torch.Tensor, block_size: int) -> None:
    """Move token ``keep[l, h, j]`` of each (layer l, KV head h) into slot j of the sequence whose blocks are
    ``table``, in ``kv_cache`` ``[2, layers, blocks, block_size, kv_heads, D]``."""
    _, nl, nb, bs, h, d = kv_cache.shape
    flat = kv_cache.view(2, nl, nb * bs, h, d)
    tab = torch.tensor(table, device=kv_cache.device)
    src = tab[keep // block_size] * block_size + keep % block_size  # [L, H, K]
    j = torch.arange(keep.shape[-1], device=kv_cache.device)
    dst = (tab[j // block_size] * block_size + j % block_size).expand_as(src)
    li = torch.arange(nl, device=kv_cache.device)[:, None, None]
    hi = torch.arange(h, device=kv_cache.device)[None, :, None]
    moved = flat[:, li, src, hi]  # [2, L, H, K, D], a copy
    flat[:, li, dst, hi] = moved


def finish_step(step: H2OStep, kv_cache: torch.Tensor, block_size: int) -> None:
    """After the forward pass: evict one slot per head of every full decode sequence, and initialise (and
    compact, past the budget) the state of every measured prefill sequence."""
    st = step.state
    if step.full:
        dev = st.score.device
        idx = torch.tensor(step.full, device=dev)
        rows = step.rows[idx]
        limit = torch.tensor([step.positions[i] - st.recent for i in step.full], device=dev)
        score, pos = st.score[:, rows], st.pos[:, rows]
        candidate = (pos >= 0) & (pos <= limit[None, :, None, None])
        victim = score.masked_fill(~candidate, float("inf")).argmin(-1)  # [L, B, H]
        st.next_slot[:, rows] = victim
        st.pos[:, rows] = pos.scatter_(3, victim[..., None], -1)
        st.score[:, rows] = score.scatter_(3, victim[..., None], 0.0)
    for (a, b, seq), mass in zip(step.prefill, step.mass, strict=True):
        n, row = b - a, seq.kv_row
        st.score[:, row] = 0.0
        st.pos[:, row] = -1
        if n <= st.budget:
            st.score[:, row, :, :n] = mass
            st.pos[:, row, :, :n] = torch.arange(n, dtype=torch.int32, device=mass.device)
            continue
        keep = kept_positions(mass, st.budget, st.recent)
        compact(kv_cache, seq.block_table, keep, block_size)
        st.score[:, row, :, : st.budget] = mass.gather(-1, keep)
        st.pos[:, row, :, : st.budget] = keep.to(torch.int32)
        st.next_slot[:, row] = st.budget
