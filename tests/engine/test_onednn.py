"""oneDNN-prepacked fp32 linear layers (the CPU default): same products as torch's sgemm path, on real weights."""

import pytest
import torch
from torch import nn

from engine.models.onednn import PACKED_LAYERS, PackedLinear, onednn_available, pack_linears

pytestmark = pytest.mark.skipif(not onednn_available(), reason="this torch build has no oneDNN prepacked linear")


def test_the_cpu_engine_runs_every_linear_layer_packed(llm):
    """The default fp32 CPU model is the packed one, so the transformers-parity tests exercise this path."""
    model = llm.engine.runner.model
    linears = [(name, m) for name, m in model.named_modules() if name.rsplit(".", 1)[-1] in PACKED_LAYERS]
    assert len(linears) == 4 * model.config.num_layers + 1
    assert all(isinstance(m, PackedLinear) for _, m in linears)


@pytest.mark.parametrize("rows", [1, 7, 64, 300])
def test_packed_product_matches_sgemm_on_the_real_lm_head(hf_model, rows):
    head = hf_model.lm_head
    packed = PackedLinear(head)
    x = torch.randn(rows, head.in_features, generator=torch.Generator().manual_seed(rows))
    with torch.no_grad():
        ref = head(x)
        out = packed(x)
    assert out.shape == ref.shape
    assert (out - ref).abs().max().item() < 1e-3 * ref.abs().max().item()


def test_bias_and_leading_dimensions_are_kept():
    gen = torch.Generator().manual_seed(0)
    linear = nn.Linear(24, 40, bias=True)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(40, 24, generator=gen))
        linear.bias.copy_(torch.randn(40, generator=gen))
    holder = nn.Sequential()
    holder.add_module("qkv_proj", linear)
    x = torch.randn(2, 3, 24, generator=gen)
    with torch.no_grad():
        ref = linear(x)
        assert pack_linears(holder, ("qkv_proj",)) == 1
        out = holder.qkv_proj(x)
    assert isinstance(holder.qkv_proj, PackedLinear)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_only_fp32_cpu_layers_are_packed():
    holder = nn.Sequential()
    holder.add_module("lm_head", nn.Linear(8, 8).to(torch.bfloat16))
    holder.add_module("o_proj", nn.Linear(8, 8))
    assert pack_linears(holder, ("lm_head", "o_proj")) == 1
    assert isinstance(holder.lm_head, nn.Linear) and isinstance(holder.o_proj, PackedLinear)
