"""Random paged-cache cases shared by the attention-kernel tests."""

import torch


def paged_case(lens, new, heads, kv_heads, dim, block, dtype, device, seed=0):
    """A shuffled paged cache (a few spare blocks) holding each sequence's context, plus the new tokens' queries:
    ``[query, k_cache, v_cache, cu_seqlens_q, context_lens, block_tables]`` on ``device``."""
    gen = torch.Generator().manual_seed(seed)
    blocks_per = [(n + block - 1) // block for n in lens]
    total = sum(blocks_per) + 3
    perm = torch.randperm(total, generator=gen)
    k_cache = torch.randn(total, block, kv_heads, dim, generator=gen).to(dtype)
    v_cache = torch.randn(total, block, kv_heads, dim, generator=gen).to(dtype)
    tables = torch.full((len(lens), max(blocks_per)), -1, dtype=torch.int32)
    used = 0
    for i, nb in enumerate(blocks_per):
        tables[i, :nb] = perm[used : used + nb].to(torch.int32)
        used += nb
    cu = torch.tensor([0] + list(torch.tensor(new).cumsum(0)), dtype=torch.int32)
    query = torch.randn(int(cu[-1]), heads, dim, generator=gen).to(dtype)
    ctx = torch.tensor(lens, dtype=torch.int32)
    return [t.to(device) for t in (query, k_cache, v_cache, cu, ctx, tables)]
