"""Opt-in int8 weights for the CPU engine: ``nn.Linear`` -> fbgemm int8 GEMM plus a few fp32 outlier channels.

Weights are quantized once at load time, symmetrically per output channel (``scale = max|w_row| / 127``), and
prepacked for fbgemm; ``torch.ops.quantized.linear_dynamic`` quantizes the activations to 7 bits (fbgemm's
``reduce_range``, which avoids int16 overflow on CPUs without VNNI), multiplies in int8 with int32 accumulation
and returns fp32.

This model's activations are heavy-tailed (a row's largest value is 20-200x its median, the largest in a few
fixed channels), so plain 7-bit activations lose most rows' small values. Two things make it usable:

- Outlier channels: a calibration pass over a few fixed texts records each layer's per-input-channel max |x|;
  the largest 3% of channels are taken out of the int8 GEMM (their weight columns zeroed) and multiplied in fp32
  (LLM.int8()-style decomposition, with the channel set fixed at load time).
- Per-row activation scale: fbgemm picks one scale per call from the whole input's min and max, so a row's result
  would depend on the other rows of the batch. Each row is divided by its own max |x| (outliers excluded) and a
  sentinel row ``(+1, -1, 0, ...)`` pins the batch range to [-1, 1], so every row is quantized the same way
  whatever it is batched with; the output rows are multiplied back.
"""

import math
import warnings
from collections.abc import Callable

import torch
from torch import nn

# torch (2.13 here) warns that creating qint8 tensors is deprecated; fbgemm's prepack still takes one, and there is
# no other way to build its packed weight. Only this message, raised only while packing, is silenced.
_QTENSOR_DEPRECATION = r"torch\.quantize_per_tensor, torch\.quantize_per_channel and other quantized tensor"


def pack_int8(weight: torch.Tensor) -> torch.ScriptObject:
    """fbgemm's prepacked form of ``weight`` ``[out, in]`` quantized to int8 per output channel."""
    w = weight.detach().float()
    scale = (w.abs().amax(dim=1) / 127).clamp(min=1e-12)
    q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    zero = torch.zeros(w.shape[0], dtype=torch.long)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_QTENSOR_DEPRECATION, category=UserWarning)
        qweight = torch._make_per_channel_quantized_tensor(q, scale.double(), zero, 0)
        return torch.ops.quantized.linear_prepack(qweight, None)


# Share of each layer's input channels kept in fp32 (the ones with the largest calibrated max |x|).
OUTLIER_SHARE = 0.03

# Calibration texts: prose, code, chat markup, a labelling prompt (the engine's typical inputs).
CALIBRATION_TEXTS = [
    "The quick brown fox jumps over the lazy dog. In 1905, Albert Einstein published four papers that changed "
    "physics, and the world has not been the same since.",
    "def add(a, b):\n    return a + b\n\n\nfor i in range(10):\n    print(add(i, 3))\n",
    "<|im_start|>user\nWhat is the weather like today?<|im_end|>\n<|im_start|>assistant\nI cannot check live "
    "weather, but I can tell you how to find a forecast.",
    "Review: the food was cold and the staff ignored us.\nQuestion: is the review positive or negative?\n"
    "Answer: negative",
]


class Int8Linear(nn.Module):
    """A linear layer with int8 per-output-channel weights for most input channels and fp32 ones for the
    ``outliers`` channels (and the bias); fp32 in, fp32 out."""

    def __init__(self, linear: nn.Linear, outliers: torch.Tensor) -> None:
        super().__init__()
        self.out_features, self.in_features = linear.out_features, linear.in_features
        w = linear.weight.detach().float()
        bias = None if linear.bias is None else linear.bias.detach().float().clone()
        self.register_buffer("bias", bias, persistent=False)
        self.register_buffer("outliers", outliers.sort().values, persistent=False)
        self.register_buffer("outlier_weight", w[:, self.outliers].t().contiguous(), persistent=False)
        self.packed = pack_int8(w.index_fill(1, self.outliers, 0.0))
        sentinel = torch.zeros(1, self.in_features)
        sentinel[0, 0], sentinel[0, -1] = 1.0, -1.0
        self.register_buffer("sentinel", sentinel, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        rows = flat.shape[0]
        kept = flat.index_fill(1, self.outliers, 0.0)
        norm = kept.abs().amax(dim=1, keepdim=True).clamp_(min=1e-30)  # 10x faster than vector_norm(inf) here
        scaled = torch.cat((kept.div_(norm), self.sentinel))
        out = torch.ops.quantized.linear_dynamic(scaled, self.packed, True)[:rows].mul_(norm)
        out.addmm_(flat.index_select(1, self.outliers), self.outlier_weight)
        if self.bias is not None:
            out += self.bias
        return out.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, fp32 channels={len(self.outliers)}"


def channel_maxima(model: nn.Module, run: Callable[[], object]) -> dict[str, torch.Tensor]:
    """Per-input-channel max |x| of every ``nn.Linear`` while ``run()`` feeds the model. ``lm_head`` is read
    from ``model.norm``'s output, so a run that never calls the LM head (an embedding pass) still covers it."""
    maxima: dict[str, torch.Tensor] = {}

    def record(name: str) -> Callable:
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor | tuple) -> None:
            # The final RMSNorm returns (normalized, residual); its first output is the LM head's input.
            x = (output[0] if isinstance(output, tuple) else output) if name == "lm_head" else inputs[0]
            x = x.detach()
            m = x.reshape(-1, x.shape[-1]).abs().amax(dim=0).float()
            maxima[name] = m if name not in maxima else torch.maximum(maxima[name], m)

        return hook

    hooks = [
        module.register_forward_hook(record(name))
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and name != "lm_head"
    ]
    hooks.append(model.norm.register_forward_hook(record("lm_head")))
    try:
        with torch.inference_mode():
            run()
    finally:
        for h in hooks:
            h.remove()
    return maxima


def quantize_int8(model: nn.Module, calibrate: Callable[[], object]) -> int:
    """Replace every ``nn.Linear`` of ``model`` (``lm_head`` included; a tied one gets its own int8 copy, the
    embedding table stays fp32) by an ``Int8Linear`` whose fp32 channels are the largest under ``calibrate()``,
    a call that runs the fp32 model over some text. Returns how many layers were replaced."""
    maxima = channel_maxima(model, calibrate)
    targets = [
        (parent, f"{prefix}.{name}" if prefix else name, name, child)
        for prefix, parent in model.named_modules()
        for name, child in parent.named_children()
        if isinstance(child, nn.Linear)
    ]
    for parent, full, name, child in targets:
        if full not in maxima:
            raise ValueError(f"{full} was not reached by the calibration run")
        k = max(1, math.ceil(child.in_features * OUTLIER_SHARE))
        setattr(parent, name, Int8Linear(child, maxima[full].topk(k).indices))
    return len(targets)
