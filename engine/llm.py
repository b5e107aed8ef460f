"""``LLM``: the vLLM-compatible facade over the local engine (generate, chat, score, embed, stats)."""

import ctypes
import itertools
import logging
import os
import sys
from collections.abc import Sequence as Seq

import numpy as np
import torch

from engine.config import EngineConfig
from engine.errors import EngineError
from engine.llm_engine import LLMEngine
from engine.loader import load_model_files
from engine.model_runner import kv_bytes_per_block
from engine.models.onednn import PACKED_LAYERS, pack_linears
from engine.models.quantize import CALIBRATION_TEXTS, quantize_int8
from engine.outputs import ChoiceScore, CompletionOutput, RequestOutput, ScoreOutput
from engine.sampling_params import SamplingParams
from engine.sequence import SeqKind, Sequence

logger = logging.getLogger(__name__)

_DTYPES = {
    "float32": torch.float32,
    "float": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "half": torch.float16,
}
Prompt = str | list[int]


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else must name a usable device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise EngineError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise EngineError(f"device {device!r} asked for, but torch sees no CUDA GPU here; use 'cpu' or 'auto'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise EngineError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) present")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    elif dev.type != "cpu":
        raise EngineError(f"device type {dev.type!r} is not supported; use 'auto', 'cpu' or 'cuda'")
    return dev


class LLM:
    """Load a model once and serve generate/chat/score/embed requests in continuous batches.

    ``model`` is ``"smollm2-135m"``, a ``.gguf`` file or a HF-style folder. ``kv_cache_memory`` is in bytes.
    ``device`` is ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; ``dtype``
    ``"auto"`` is bfloat16 on CUDA and float32 on the CPU. On CUDA the attention ops are our Triton kernels and
    decode steps replay CUDA graphs (``cuda_graphs=False`` runs eagerly, for debugging).
    ``num_scheduler_steps`` decode steps run back to back on the device before the host schedules again (vLLM's
    multi-step scheduling; ``None``: 32 on CUDA, 1 on the CPU): outputs are identical, the host's per-token work
    is paid once per several steps, and a finished sequence may compute up to that many steps it then drops.

    ``kv_policy="h2o"`` turns on Heavy-Hitter Oracle KV eviction for generated sequences (engine/h2o.py,
    docs/engine.md): each (layer, KV head) keeps ``kv_budget`` tokens, the ``recent_window`` newest (default
    ``kv_budget // 2``) plus those with the most accumulated attention. It needs prefix caching off (the default
    under h2o) and runs its attention in torch ops, without CUDA graphs. ``kv_policy="full"`` (the default)
    keeps every token.

    ``quantization="int8"`` (CPU, float32 only) runs the linear layers and the LM head as int8 GEMMs (see
    engine/models/quantize.py): faster, at a small accuracy cost; the default ``None`` keeps the fp32 weights,
    which on the CPU are prepacked for oneDNN's GEMM at load (engine/models/onednn.py: the same fp32 math,
    summed in another order).
    """

    def __init__(
        self,
        model: str = "smollm2-135m",
        dtype: str | torch.dtype = "auto",
        device: str = "auto",
        max_num_seqs: int = 256,
        max_model_len: int | None = None,
        kv_cache_memory: int = 1 << 30,
        seed: int = 0,
        block_size: int = 16,
        max_num_batched_tokens: int | None = None,
        enable_prefix_caching: bool | None = None,
        cuda_graphs: bool = True,
        num_scheduler_steps: int | None = None,
        kv_policy: str = "full",
        kv_budget: int | None = None,
        recent_window: int | None = None,
        quantization: str | None = None,
    ) -> None:
        kv_budget, recent_window = _check_kv_policy(kv_policy, kv_budget, recent_window, enable_prefix_caching)
        if enable_prefix_caching is None:
            enable_prefix_caching = kv_policy == "full"
        torch_device = resolve_device(device)
        if num_scheduler_steps is None:
            num_scheduler_steps = 32 if torch_device.type == "cuda" else 1
        if not isinstance(num_scheduler_steps, int) or isinstance(num_scheduler_steps, bool) or num_scheduler_steps < 1:
            raise EngineError(f"num_scheduler_steps must be an int >= 1, got {num_scheduler_steps!r}")
        if dtype == "auto":
            torch_dtype = torch.bfloat16 if torch_device.type == "cuda" else torch.float32
        else:
            torch_dtype = dtype if isinstance(dtype, torch.dtype) else _DTYPES.get(dtype)
        if torch_dtype is None:
            raise EngineError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}")
        _check_quantization(quantization, torch_device, torch_dtype)
        if not isinstance(max_num_seqs, int) or max_num_seqs < 1:
            raise EngineError(f"max_num_seqs must be an int >= 1, got {max_num_seqs!r}")
        if torch_device.type == "cpu":
            torch.set_num_threads(os.cpu_count() or 1)
        _reuse_freed_memory()
        loaded = load_model_files(model)
        cfg = loaded.config
        max_len = max_model_len or min(cfg.max_position_embeddings, 2048)
        if not isinstance(max_len, int) or not 1 < max_len <= cfg.max_position_embeddings:
            raise EngineError(
                f"max_model_len must be in [2, {cfg.max_position_embeddings}], got {max_model_len!r}"
            )
        num_blocks = int(kv_cache_memory) // kv_bytes_per_block(cfg, block_size, torch_dtype)
        if num_blocks * block_size < max_len:
            raise EngineError(
                f"kv_cache_memory={kv_cache_memory} holds {num_blocks * block_size} tokens, fewer than "
                f"max_model_len={max_len}; raise kv_cache_memory or lower max_model_len"
            )
        self.config = EngineConfig(
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max(max_num_batched_tokens or 2048, max_len),
            max_model_len=max_len,
            block_size=block_size,
            num_blocks=num_blocks,
            enable_prefix_caching=enable_prefix_caching,
            num_scheduler_steps=num_scheduler_steps,
            kv_policy=kv_policy,
            kv_budget=kv_budget,
            recent_window=recent_window,
        )
        self.device = torch_device
        self.engine = LLMEngine(loaded, self.config, torch_dtype, torch_device, cuda_graphs=cuda_graphs)
        self.tokenizer = loaded.tokenizer
        self.seed = seed
        self._ids = itertools.count()
        self._requests = itertools.count()
        self.quantization = quantization
        if quantization == "int8":
            texts = [self.tokenizer.encode(t)[: self.config.max_model_len - 1] for t in CALIBRATION_TEXTS]
            quantize_int8(self.engine.runner.model, lambda: self.embed(texts))
        elif torch_device.type == "cpu" and torch_dtype == torch.float32:
            pack_linears(self.engine.runner.model, PACKED_LAYERS)

    def _tokenize(self, prompt: Prompt, what: str = "prompt") -> list[int]:
        if isinstance(prompt, str):
            ids = self.tokenizer.encode(prompt)
        elif isinstance(prompt, list | tuple) and all(
            isinstance(t, int) and not isinstance(t, bool) for t in prompt
        ):
            vocab = self.engine.model_config.vocab_size
            if any(t < 0 or t >= vocab for t in prompt):
                raise EngineError(f"{what} token ids must be in [0, {vocab}), got {list(prompt)[:8]}...")
            ids = list(prompt)
        else:
            raise EngineError(f"{what} must be a string or a list of token ids, got {type(prompt).__name__}")
        if not ids:
            raise EngineError(f"{what} is empty; pass at least one token")
        if len(ids) > self.config.max_model_len - (1 if what == "prompt" else 0):
            raise EngineError(
                f"{what} has {len(ids)} tokens, more than max_model_len={self.config.max_model_len} allows; "
                "shorten it or raise max_model_len"
            )
        return ids

    def _sample_seed(self, seed: int | None, index: int) -> int:
        """The counter-based sampler's seed for sample ``index`` of a request (see engine/sampler.py)."""
        base = seed if seed is not None else self.seed * 1_000_003 + next(self._requests)
        return (base * 7919 + index) % (1 << 63)

    def generate(
        self,
        prompts: Prompt | list[Prompt],
        sampling_params: SamplingParams | list[SamplingParams] | None = None,
        use_tqdm: bool = False,
    ) -> list[RequestOutput]:
        """Complete each prompt (text or token ids); ``n`` samples per prompt share its KV blocks."""
        single = isinstance(prompts, str) or (
            isinstance(prompts, list) and prompts and isinstance(prompts[0], int)
        )
        prompt_list = [prompts] if single else prompts
        if not isinstance(prompt_list, Seq) or isinstance(prompt_list, str) or not prompt_list:
            raise EngineError("prompts must be a non-empty string, token-id list, or list of them")
        params = sampling_params if sampling_params is not None else SamplingParams()
        params_list = params if isinstance(params, list) else [params] * len(prompt_list)
        if len(params_list) != len(prompt_list) or not all(
            isinstance(p, SamplingParams) for p in params_list
        ):
            raise EngineError("sampling_params must be one SamplingParams or a list with one per prompt")
        if self.config.kv_policy == "h2o" and any(sp.n > 1 for sp in params_list):
            raise EngineError(
                "n > 1 is not supported with kv_policy='h2o' (its samples would share KV blocks that h2o "
                "rewrites); send n separate requests with different seeds, or use kv_policy='full'"
            )
        token_lists = [self._tokenize(p) for p in prompt_list]
        groups = []
        for ids, sp in zip(token_lists, params_list, strict=False):
            room = self.config.max_model_len - len(ids)
            seqs = []
            for j in range(sp.n):
                seq = Sequence(
                    next(self._ids),
                    list(ids),
                    SeqKind.GENERATE,
                    sp,
                    logits_from=len(ids) - 1,
                    sample_seed=None if sp.greedy else self._sample_seed(sp.seed, j),
                    logprobs=[] if sp.logprobs is not None else None,
                )
                seq.params = sp if sp.max_tokens is not None and sp.max_tokens <= room else _capped(sp, room)
                seqs.append(seq)
            groups.append(seqs)
        for seqs in groups:
            seqs[0].siblings = seqs[1:]
            self.engine.add(seqs[0])
        self._run()
        outputs = []
        for prompt, ids, seqs in zip(prompt_list, token_lists, groups, strict=False):
            outs = [
                CompletionOutput(
                    j, s.text, s.output_token_ids, s.cumulative_logprob, s.logprobs, s.finish_reason
                )
                for j, s in enumerate(seqs)
            ]
            outputs.append(
                RequestOutput(
                    str(seqs[0].seq_id),
                    prompt if isinstance(prompt, str) else None,
                    ids,
                    outs,
                    num_cached_tokens=max(seqs[0].num_prefix_hit_tokens, 0),
                )
            )
        return outputs

    def _run(self) -> None:
        try:
            self.engine.run()
        except Exception:
            self.engine.reset()
            raise

    def chat(
        self,
        messages: list[dict] | list[list[dict]],
        sampling_params: SamplingParams | list[SamplingParams] | None = None,
        use_tqdm: bool = False,
    ) -> list[RequestOutput]:
        """Generate replies to one conversation or a list of them, rendered with the model's chat template."""
        if not isinstance(messages, list) or not messages:
            raise EngineError(
                "messages must be a non-empty list of {'role', 'content'} dicts or of conversations"
            )
        convs = [messages] if isinstance(messages[0], dict) else messages
        for conv in convs:
            if not all(isinstance(m, dict) and "role" in m and "content" in m for m in conv):
                raise EngineError("each message must be a dict with 'role' and 'content'")
        prompts = [self.tokenizer.apply_chat_template(conv) for conv in convs]
        return self.generate(prompts, sampling_params, use_tqdm=use_tqdm)

    def score(
        self, prompts: Prompt | list[Prompt], choices: list[str] | list[list[str]]
    ) -> list[ScoreOutput]:
        """Log-probability of each choice continuing each prompt. ``choices`` is one list for all prompts or
        one list per prompt. The prompt is prefilled once; its choices fork its KV blocks."""
        prompt_list = [prompts] if isinstance(prompts, str) else prompts
        if not isinstance(prompt_list, list) or not prompt_list:
            raise EngineError("prompts must be a non-empty string or list of prompts")
        if not isinstance(choices, list) or not choices:
            raise EngineError("choices must be a non-empty list of strings (or one such list per prompt)")
        per_prompt = choices if isinstance(choices[0], list) and not isinstance(choices[0][0], int) else None
        if per_prompt is not None and len(per_prompt) != len(prompt_list):
            raise EngineError(f"got {len(per_prompt)} choice lists for {len(prompt_list)} prompts")
        jobs = []
        for i, prompt in enumerate(prompt_list):
            ids = self._tokenize(prompt)
            cs = per_prompt[i] if per_prompt is not None else choices
            if not cs:
                raise EngineError(f"prompt {i} has no choices")
            cids = [self._tokenize_choice(c) for c in cs]
            if len(ids) + max(len(c) for c in cids) > self.config.max_model_len:
                raise EngineError(
                    f"prompt {i} plus its longest choice exceed max_model_len={self.config.max_model_len}"
                )
            parent = Sequence(
                next(self._ids),
                list(ids),
                SeqKind.SCORE,
                logits_from=len(ids) - 1,
                score_targets=[c[0] for c in cids],
            )
            children = {}
            for k, c in enumerate(cids):
                if len(c) > 1:
                    children[k] = Sequence(
                        next(self._ids),
                        ids + c[:-1],
                        SeqKind.SCORE,
                        logits_from=len(ids),
                        score_targets=c[1:],
                    )
            jobs.append((prompt, cs, cids, parent, children))
        for _, _, _, parent, children in jobs:
            self.engine.add(parent, list(children.values()))
        self._run()
        results = []
        for prompt, cs, _, parent, children in jobs:
            out = ScoreOutput(prompt)
            for k, c in enumerate(cs):
                lps = [parent.result[k]] + (children[k].result if k in children else [])
                total = float(sum(lps))
                out.choices.append(ChoiceScore(c, total, total / len(lps), len(lps)))
            results.append(out)
        return results

    def _tokenize_choice(self, choice: str | list[int]) -> list[int]:
        if isinstance(choice, str):
            ids = self.tokenizer.tokenizer.encode(choice, add_special_tokens=False).ids
            if not ids:
                raise EngineError("a choice is empty; pass at least one character")
            return ids
        return self._tokenize(choice, what="choice")

    def embed(self, texts: str | list[str]) -> np.ndarray:
        """Mean-pooled final hidden states, one row per text, as float32 ``[len(texts), hidden_size]``."""
        text_list = [texts] if isinstance(texts, str) else texts
        if not isinstance(text_list, list) or not text_list:
            raise EngineError("texts must be a non-empty string or list of strings")
        seqs = [
            Sequence(next(self._ids), self._tokenize(t), SeqKind.EMBED, cacheable=False) for t in text_list
        ]
        for seq in seqs:
            self.engine.add(seq)
        self._run()
        return torch.stack([s.result for s in seqs]).cpu().numpy()

    def stream_logprobs(self, texts: list[list[int]], prefill: int = 32) -> list[list[float]]:
        """Teacher-forced log-probs of each text's tokens after its first ``prefill``: the first ``prefill``
        tokens are prefilled, then every later true token is fed through a decode step (so under
        ``kv_policy="h2o"`` the cache evicts exactly as in generation). Returns, per text, ``log p(t_i | t_<i)``
        for ``i >= prefill``. This is the streaming perplexity evaluation of benchmarks/h2o.py."""
        if not isinstance(texts, list) or not texts:
            raise EngineError("texts must be a non-empty list of token-id lists")
        if not isinstance(prefill, int) or prefill < 1:
            raise EngineError(f"prefill must be an int >= 1, got {prefill!r}")
        seqs = []
        for ids in texts:
            ids = self._tokenize(ids, what="text")
            if len(ids) <= prefill:
                raise EngineError(f"a text has {len(ids)} tokens; it needs more than prefill={prefill}")
            sp = SamplingParams(temperature=0, max_tokens=len(ids) - prefill, ignore_eos=True, logprobs=0)
            seq = Sequence(next(self._ids), ids[:prefill], SeqKind.GENERATE, sp, logits_from=prefill - 1,
                           logprobs=[])
            seq.forced = ids[prefill:]
            seqs.append(seq)
        for seq in seqs:
            self.engine.add(seq)
        self._run()
        return [[entry[t] for t, entry in zip(s.output_token_ids, s.logprobs, strict=True)] for s in seqs]

    def stats(self) -> dict:
        """Tokens prefilled (computed), served from the prefix cache, generated; model steps and scheduler
        rounds (fewer than steps when multi-step decoding runs several steps per round); engine wall time; KV
        blocks in use now and at peak (since start or ``engine.block_manager.reset_peak()``) and their size."""
        s = self.engine.stats
        seen = s.prefill_tokens + s.cached_tokens
        bm = self.engine.block_manager
        return {
            "kv_policy": self.config.kv_policy,
            "kv_blocks_in_use": bm.num_used_blocks,
            "kv_blocks_peak": bm.peak_used,
            "kv_block_bytes": self.engine.kv_block_bytes,
            "prefill_tokens": s.prefill_tokens,
            "cached_tokens": s.cached_tokens,
            "prefix_cache_hit_rate": s.cached_tokens / seen if seen else 0.0,
            "generated_tokens": s.generated_tokens,
            "steps": s.steps,
            "schedules": s.schedules,
            "preemptions": self.engine.scheduler.num_preemptions,
            "wall_time_s": s.wall_time_s,
        }


def _check_kv_policy(
    policy: str, budget: int | None, recent: int | None, prefix_caching: bool | None
) -> tuple[int, int]:
    """Validate the KV policy settings; returns (kv_budget, recent_window), 0 and 0 under ``"full"``."""
    if policy not in ("full", "h2o"):
        raise EngineError(f"kv_policy must be 'full' or 'h2o', got {policy!r}")
    if policy == "full":
        if budget is not None or recent is not None:
            raise EngineError("kv_budget and recent_window apply only to kv_policy='h2o'; pass kv_policy='h2o'")
        return 0, 0
    if prefix_caching:
        raise EngineError(
            "kv_policy='h2o' rewrites KV blocks in place, so it cannot share them through the prefix cache; "
            "pass enable_prefix_caching=False (or leave it unset)"
        )

    def is_int(x) -> bool:
        return isinstance(x, int) and not isinstance(x, bool)

    if not is_int(budget) or budget < 2:
        raise EngineError(f"kv_policy='h2o' needs kv_budget, an int >= 2 (tokens kept per head), got {budget!r}")
    recent = max(budget // 2, 1) if recent is None else recent
    if not is_int(recent) or recent < 1:
        raise EngineError(f"recent_window must be an int >= 1, got {recent!r}")
    if budget < recent + 1:
        raise EngineError(
            f"kv_budget={budget} must be at least recent_window + 1 = {recent + 1} (room for one heavy hitter); "
            "raise kv_budget or lower recent_window"
        )
    return budget, recent


def _check_quantization(quantization: str | None, device: torch.device, dtype: torch.dtype) -> None:
    """``None`` or ``"int8"``; int8 runs fbgemm GEMMs, so it needs the CPU and float32 activations."""
    if quantization is None:
        return
    if quantization != "int8":
        raise EngineError(f"unknown quantization {quantization!r}; use None (fp32 weights) or 'int8'")
    if device.type != "cpu":
        raise EngineError(
            f"quantization='int8' runs on the CPU only (fbgemm), not on {device}; use device='cpu' or "
            "quantization=None"
        )
    if dtype != torch.float32:
        raise EngineError(f"quantization='int8' needs dtype='float32' (got {dtype}); use dtype='auto' or 'float32'")


def _reuse_freed_memory() -> None:
    """Let glibc's heap keep and reuse large freed blocks (process-wide, once).

    By default glibc serves every allocation above a threshold (128 KiB, adapting up to 32 MiB) with a fresh
    mmap and unmaps it on free, and trims the heap top back to the kernel: each decode step's large temporaries
    (logits of rows x vocabulary floats, gathered K/V, sampler passes) then arrive as new zero pages and pay a
    page fault per 4 KiB on every step. Over a 256 x 49152 float tensor that made exp and cumsum 3-5x slower on
    the CPU sandbox. Raising the mmap and trim thresholds (what jemalloc/tcmalloc do, as PyTorch's CPU tuning
    guide recommends preloading) makes them reuse warm memory; the cost is that the process's RSS stays at its
    peak instead of shrinking after a big batch.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED or not sys.platform.startswith("linux"):
        return
    _MALLOC_TUNED = True
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 1 << 30)
    mallopt(m_trim_threshold, 1 << 30)


_MALLOC_TUNED = False


def _capped(sp: SamplingParams, room: int) -> SamplingParams:
    """A copy of ``sp`` whose max_tokens fits the room left under max_model_len."""
    return SamplingParams(
        n=sp.n,
        temperature=sp.temperature,
        top_p=sp.top_p,
        top_k=sp.top_k,
        min_p=sp.min_p,
        seed=sp.seed,
        max_tokens=max(room, 1),
        stop=sp.stop,
        stop_token_ids=sp.stop_token_ids,
        ignore_eos=sp.ignore_eos,
        logprobs=sp.logprobs,
    )
