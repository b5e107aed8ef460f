"""Block manager bookkeeping without a model: ref counts, prefix hits, LRU eviction, forks."""

from engine.block_manager import BlockManager
from engine.sequence import SeqKind, Sequence


def seq(i: int, tokens: list[int]) -> Sequence:
    return Sequence(i, list(tokens), SeqKind.GENERATE, logits_from=len(tokens) - 1)


def test_shared_prefix_blocks_are_reused_and_ref_counted():
    bm = BlockManager(num_blocks=8, block_size=4)
    a, b = seq(0, list(range(10))), seq(1, list(range(8)) + [50, 51, 52])
    bm.allocate(a)
    bm.allocate(b)
    assert b.num_cached_tokens == 8
    assert a.block_table[:2] == b.block_table[:2]
    assert bm.blocks[a.block_table[0]].ref_count == 2
    bm.deallocate(a)
    assert bm.blocks[b.block_table[0]].ref_count == 1
    assert bm.num_free_blocks == 8 - 3


def test_cache_hits_never_cover_the_position_whose_logits_are_needed():
    bm = BlockManager(num_blocks=8, block_size=4)
    bm.allocate(seq(0, list(range(8))))
    again = seq(1, list(range(8)))
    bm.allocate(again)
    assert again.num_cached_tokens == 4


def test_unreferenced_cached_blocks_survive_until_evicted_lru():
    bm = BlockManager(num_blocks=4, block_size=2)
    a = seq(0, [1, 2, 3, 4, 5])
    bm.allocate(a)
    bm.deallocate(a)
    hit = seq(1, [1, 2, 3, 4, 9])
    bm.allocate(hit)
    assert hit.num_cached_tokens == 4
    bm.deallocate(hit)
    other = seq(2, [7, 7, 8, 8, 6, 6, 5])
    bm.allocate(other)
    evicted = seq(3, [1, 2, 3, 4, 9])
    bm.deallocate(other)
    bm.allocate(evicted)
    assert evicted.num_cached_tokens < 4


def test_fork_shares_full_blocks_and_copies_the_partial_one():
    bm = BlockManager(num_blocks=8, block_size=4)
    parent = seq(0, list(range(6)))
    bm.allocate(parent)
    child = Sequence(1, list(range(6)) + [9, 9], SeqKind.SCORE, logits_from=6)
    copies = bm.fork(parent, child)
    assert child.block_table[0] == parent.block_table[0]
    assert copies == [(parent.block_table[1], child.block_table[1])]
    assert child.num_cached_tokens == 6


def test_append_registers_filled_blocks():
    bm = BlockManager(num_blocks=8, block_size=2)
    s = seq(0, [1, 2, 3])
    bm.allocate(s)
    s.token_ids.append(4)
    assert bm.can_append(s)
    bm.append(s)
    bm.deallocate(s)
    again = seq(1, [1, 2, 3, 4, 5])
    bm.allocate(again)
    assert again.num_cached_tokens == 4


def test_hit_prediction_matches_allocation():
    bm = BlockManager(num_blocks=8, block_size=4)
    bm.allocate(seq(0, list(range(10))))
    probe = seq(1, list(range(9)) + [77])
    predicted = bm.num_hit_tokens_for(probe)
    bm.allocate(probe)
    assert predicted == probe.num_cached_tokens == 8
