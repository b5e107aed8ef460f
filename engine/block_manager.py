"""Paged KV-cache bookkeeping: ref-counted blocks, chained-hash prefix caching, LRU eviction, forks."""

from collections import OrderedDict
from dataclasses import dataclass, field

from engine.sequence import SeqKind, Sequence


@dataclass
class Block:
    """One fixed-size KV block; ``hash`` is set once it is full and registered in the prefix cache."""

    block_id: int
    ref_count: int = 0
    hash: int = -1
    token_ids: tuple = field(default_factory=tuple)


def chain_hash(token_ids: tuple, parent_hash: int) -> int:
    """Key of a full block: its tokens chained with the key of the block before it."""
    return hash((parent_hash, token_ids))


class BlockManager:
    """Maps sequences to KV blocks. Free blocks form an LRU queue: never-cached blocks are handed out first,
    then cached blocks, least recently released first, which evicts them from the prefix cache."""

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True) -> None:
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.hash_to_block: dict[int, int] = {}
        self.free: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))
        self.num_hit_tokens = 0
        self.num_lookup_tokens = 0
        self.peak_used = 0

    @property
    def num_used_blocks(self) -> int:
        return len(self.blocks) - len(self.free)

    def reset_peak(self) -> None:
        """Start measuring the peak number of blocks in use from now."""
        self.peak_used = self.num_used_blocks

    @property
    def num_free_blocks(self) -> int:
        return len(self.free)

    def blocks_needed(self, num_tokens: int) -> int:
        return (num_tokens + self.block_size - 1) // self.block_size

    def _take_free(self) -> Block:
        block_id, _ = self.free.popitem(last=False)
        if len(self.blocks) - len(self.free) > self.peak_used:
            self.peak_used = len(self.blocks) - len(self.free)
        block = self.blocks[block_id]
        if block.hash != -1 and self.hash_to_block.get(block.hash) == block_id:
            del self.hash_to_block[block.hash]
        block.hash, block.token_ids, block.ref_count = -1, (), 1
        return block

    def _register(self, block: Block, token_ids: tuple, parent_hash: int) -> int:
        h = chain_hash(token_ids, parent_hash)
        block.hash, block.token_ids = h, token_ids
        self.hash_to_block[h] = block.block_id
        return h

    def num_hit_tokens_for(self, seq: Sequence) -> int:
        """Prompt tokens ``allocate`` would serve from the prefix cache, without changing anything."""
        bs = self.block_size
        cap = seq.logits_from if seq.cacheable and self.enable_prefix_caching else 0
        parent_hash, hits = -1, 0
        for i in range(cap // bs):
            tokens = tuple(seq.token_ids[i * bs : (i + 1) * bs])
            h = chain_hash(tokens, parent_hash)
            block_id = self.hash_to_block.get(h)
            if block_id is None or self.blocks[block_id].token_ids != tokens:
                break
            hits += bs
            parent_hash = h
        return hits

    def can_allocate(self, seq: Sequence) -> bool:
        return self.blocks_needed(len(seq)) <= len(self.free)

    def allocate(self, seq: Sequence) -> None:
        """Give ``seq`` blocks for all its tokens, reusing cached full blocks of its prefix."""
        bs = self.block_size
        cap = seq.logits_from if seq.cacheable and self.enable_prefix_caching else 0
        parent_hash, missed, cached = -1, False, 0
        for i in range(self.blocks_needed(len(seq))):
            tokens = tuple(seq.token_ids[i * bs : (i + 1) * bs])
            full = len(tokens) == bs
            block = None
            if full and not missed and (i + 1) * bs <= cap:
                h = chain_hash(tokens, parent_hash)
                block_id = self.hash_to_block.get(h)
                if block_id is not None and self.blocks[block_id].token_ids == tokens:
                    block = self.blocks[block_id]
                    if block.ref_count == 0:
                        del self.free[block_id]
                    block.ref_count += 1
                    cached += bs
                    parent_hash = h
            if block is None:
                missed = True
                block = self._take_free()
                if full and seq.cacheable and self.enable_prefix_caching:
                    parent_hash = self._register(block, tokens, parent_hash)
            seq.block_table.append(block.block_id)
        seq.num_cached_tokens = cached
        if seq.num_prefix_hit_tokens < 0:
            seq.num_prefix_hit_tokens = cached
        self.num_hit_tokens += cached
        self.num_lookup_tokens += len(seq)

    def can_fork(self, parent: Sequence, child: Sequence, num_tokens: int | None = None) -> bool:
        shared = (len(parent) if num_tokens is None else num_tokens) // self.block_size
        return self.blocks_needed(len(child)) - shared <= len(self.free)

    def fork(self, parent: Sequence, child: Sequence, num_tokens: int | None = None) -> list[tuple[int, int]]:
        """Share the first ``num_tokens`` (default: all) computed tokens of ``parent`` with ``child``, whose
        tokens extend them: full blocks are shared, a partial last block is copied; returns the (src, dst)
        block copies the runner must do first."""
        n = len(parent) if num_tokens is None else num_tokens
        shared = n // self.block_size
        copies = []
        for block_id in parent.block_table[:shared]:
            self.blocks[block_id].ref_count += 1
            child.block_table.append(block_id)
        if n % self.block_size:
            block = self._take_free()
            copies.append((parent.block_table[shared], block.block_id))
            child.block_table.append(block.block_id)
        while len(child.block_table) < self.blocks_needed(len(child)):
            child.block_table.append(self._take_free().block_id)
        child.num_cached_tokens = n
        child.num_prefix_hit_tokens = n
        self.num_hit_tokens += n
        self.num_lookup_tokens += len(child)
        return copies

    def deallocate(self, seq: Sequence) -> None:
        """Release ``seq``'s blocks; cached ones stay findable until evicted."""
        for block_id in reversed(seq.block_table):
            block = self.blocks[block_id]
            block.ref_count -= 1
            if block.ref_count == 0:
                self.free[block_id] = None
                if block.hash == -1:
                    self.free.move_to_end(block_id, last=False)
        seq.block_table = []
        seq.num_cached_tokens = 0

    def can_append(self, seq: Sequence) -> bool:
        return self.blocks_needed(len(seq)) - len(seq.block_table) <= len(self.free)

    def reserve(self, seq: Sequence, num_tokens: int) -> None:
        """Give ``seq`` blocks for ``num_tokens`` tokens ahead of time (multi-step decoding); ``append`` later
        registers them in the prefix cache as real tokens fill them."""
        while len(seq.block_table) < self.blocks_needed(num_tokens):
            seq.block_table.append(self._take_free().block_id)

    def append(self, seq: Sequence) -> None:
        """Make room for ``seq``'s newest token; register the block it fills in the prefix cache."""
        if self.blocks_needed(len(seq)) > len(seq.block_table):
            seq.block_table.append(self._take_free().block_id)
        if len(seq) % self.block_size == 0:
            self._register_full(seq, len(seq) // self.block_size)

    def register_filled(self, seq: Sequence, start: int, end: int) -> None:
        """Register the blocks ``seq`` filled at lengths ``start`` to ``end`` (both included; multi-step
        decoding's equivalent of ``append`` at each of those lengths, with the blocks already reserved)."""
        bs = self.block_size
        for n in range((start + bs - 1) // bs, end // bs + 1):
            if n:
                self._register_full(seq, n)

    def _register_full(self, seq: Sequence, n: int) -> None:
        """Register ``seq``'s ``n``-th block (now full) when its chain of predecessors is registered."""
        if not (seq.cacheable and self.enable_prefix_caching):
            return
        bs = self.block_size
        prev = self.blocks[seq.block_table[n - 2]].hash if n > 1 else -1
        block = self.blocks[seq.block_table[n - 1]]
        if block.hash == -1 and (n == 1 or prev != -1):
            self._register(block, tuple(seq.token_ids[(n - 1) * bs : n * bs]), prev)


class CappedBlockManager(BlockManager):
    """The block manager of ``kv_policy="h2o"``: a generating sequence holds at most the blocks of
    ``cap_tokens`` slots once its prefill is compacted (``shrink``), so its footprint stops growing; score and
    embed sequences (prefill only) are unaffected. Each generating sequence also gets a row of the h2o state
    (``seq.kv_row``) while it holds blocks. No prefix caching: compaction rewrites blocks in place."""

    def __init__(self, num_blocks: int, block_size: int, cap_tokens: int, num_rows: int) -> None:
        super().__init__(num_blocks, block_size, enable_prefix_caching=False)
        self.cap_tokens = cap_tokens
        self.cap_blocks = self.blocks_needed(cap_tokens)
        self.free_rows = list(range(num_rows - 1, -1, -1))

    def _needed(self, seq: Sequence) -> int:
        n = len(seq)
        return self.blocks_needed(min(n, self.cap_tokens) if seq.kind == SeqKind.GENERATE else n)

    def can_allocate(self, seq: Sequence) -> bool:
        return super().can_allocate(seq) and (seq.kind != SeqKind.GENERATE or bool(self.free_rows))

    def allocate(self, seq: Sequence) -> None:
        super().allocate(seq)
        if seq.kind == SeqKind.GENERATE:
            seq.kv_row = self.free_rows.pop()

    def deallocate(self, seq: Sequence) -> None:
        super().deallocate(seq)
        if seq.kv_row >= 0:
            self.free_rows.append(seq.kv_row)
            seq.kv_row = -1

    def can_append(self, seq: Sequence) -> bool:
        return self._needed(seq) - len(seq.block_table) <= len(self.free)

    def append(self, seq: Sequence) -> None:
        if self._needed(seq) > len(seq.block_table):
            seq.block_table.append(self._take_free().block_id)

    def shrink(self, seq: Sequence) -> None:
        """Free a compacted sequence's blocks past the cap (a new list, so cached table tensors refresh)."""
        table = seq.block_table
        if len(table) <= self.cap_blocks:
            return
        for block_id in reversed(table[self.cap_blocks :]):
            block = self.blocks[block_id]
            block.ref_count -= 1
            if block.ref_count == 0:
                self.free[block_id] = None
                self.free.move_to_end(block_id, last=False)
        seq.block_table = table[: self.cap_blocks]
