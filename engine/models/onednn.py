"""fp32 linear layers on the CPU through oneDNN with the weight prepacked once at load time.

torch's ``F.linear`` on the CPU calls MKL's sgemm, which re-reads the weight in its plain row-major layout on every
call. For a wide, short-K matrix such as the 49,152 x 576 LM head at decode batch sizes (1-256 rows) that layout
costs: oneDNN's blocked layout, reordered once, runs the same product 1.2-2.4x faster on an AVX2 CPU
(docs/benchmarks.md). The math is the same fp32 GEMM; only the summation order differs (results within ~2e-4
of sgemm on this model's logits).
"""

import torch
from torch import nn


def onednn_available() -> bool:
    """Whether this torch build has oneDNN and the prepacked-linear ops (CPU builds since torch 2.0 do)."""
    ops = torch.ops.mkldnn
    return (
        torch.backends.mkldnn.is_available()
        and hasattr(ops, "_reorder_linear_weight")
        and hasattr(ops, "_linear_pointwise")
    )


class PackedLinear(nn.Module):
    """``nn.Linear`` (fp32, CPU) whose weight is held only in oneDNN's blocked layout (the plain copy is not
    kept, so memory does not double; a tied embedding keeps its own table)."""

    def __init__(self, linear: nn.Linear, batch_hint: int = 64) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), batch_hint)
        self.register_buffer("packed_weight", packed, persistent=False)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, onednn_packed=True"


# Every linear layer of the Llama-family model: at 64 greedy rows the decode step ran 1.34x faster with all of
# them packed, 1.32x with the LM head and gate/up projection only (docs/benchmarks.md).
PACKED_LAYERS = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj", "lm_head")


def pack_linears(model: nn.Module, names: tuple[str, ...]) -> int:
    """Replace the fp32 CPU ``nn.Linear`` children of ``model`` whose attribute name is in ``names`` by
    ``PackedLinear``; returns how many were replaced (0 when oneDNN is unavailable)."""
    if not onednn_available():
        return 0
    targets = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if name in names and isinstance(child, nn.Linear)
        and child.weight.device.type == "cpu" and child.weight.dtype == torch.float32
    ]
    for parent, name, child in targets:
        setattr(parent, name, PackedLinear(child))
    return len(targets)
