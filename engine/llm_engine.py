"""The step loop: schedule a batch, run the model, turn outputs into tokens, scores or embeddings."""

import logging
import time
from dataclasses import dataclass

import torch

from engine.block_manager import BlockManager, CappedBlockManager
from engine.config import EngineConfig
from engine.loader import LoadedModel
from engine.loader.weights import load_weights
from engine.model_runner import ModelRunner, h2o_rows, kv_bytes_per_block
from engine.models.llama import LlamaForCausalLM
from engine.sampler import Sampler, uniform_draws
from engine.scheduler import Scheduler
from engine.sequence import SeqKind, Sequence

logger = logging.getLogger(__name__)

# Score rows whose vocabulary log-probs are materialized at once ([rows, vocab] fp32: 512 rows ~ 100 MB).
_SCORE_CHUNK = 512


@dataclass
class EngineStats:
    """Token accounting since the engine started."""

    prefill_tokens: int = 0
    cached_tokens: int = 0
    generated_tokens: int = 0
    steps: int = 0
    schedules: int = 0
    wall_time_s: float = 0.0


class LLMEngine:
    """Local backend: owns model, KV cache, scheduler and sampler, and runs sequences to completion."""

    def __init__(
        self,
        loaded: LoadedModel,
        config: EngineConfig,
        dtype: torch.dtype,
        device: torch.device | None = None,
        cuda_graphs: bool = True,
    ) -> None:
        self.config = config
        self.model_config = loaded.config
        self.tokenizer = loaded.tokenizer
        self.device = device or torch.device("cpu")
        model = LlamaForCausalLM(loaded.config, config.max_model_len).to(dtype)
        load_weights(model, loaded.weights)
        model.eval().to(self.device)
        self.h2o = config.kv_policy == "h2o"
        if self.h2o:
            self.block_manager = CappedBlockManager(
                config.num_blocks, config.block_size, config.kv_budget + 1, h2o_rows(config)
            )
        else:
            self.block_manager = BlockManager(config.num_blocks, config.block_size, config.enable_prefix_caching)
        self.scheduler = Scheduler(config, self.block_manager)
        self.runner = ModelRunner(model, config, dtype, self.device, cuda_graphs=cuda_graphs)
        self.sampler = Sampler()
        self.stats = EngineStats()
        self.children: dict[int, list[Sequence]] = {}
        self.eos_ids = set(loaded.config.eos_token_ids)
        self.kv_block_bytes = kv_bytes_per_block(loaded.config, config.block_size, dtype)
        self.forcing = 0  # sequences with a teacher-forced continuation not yet finished

    def add(self, seq: Sequence, children: list[Sequence] | None = None) -> None:
        """Queue ``seq``; ``children`` (score continuations) are queued once ``seq`` is computed."""
        if children:
            seq.pending_children = len(children)
            for child in children:
                child.parent = seq
            self.children[seq.seq_id] = children
        if seq.forced is not None:
            self.forcing += 1
        self.scheduler.add(seq)

    def run(self) -> None:
        """Step until every queued sequence has finished."""
        while self.scheduler.has_unfinished():
            self.step()

    def step(self) -> None:
        start = time.perf_counter()
        batch = self.scheduler.schedule()
        self.stats.schedules += 1
        num_steps, remaining = self._num_decode_steps(batch)
        if num_steps > 1:
            self._decode_steps(batch.decode, num_steps, remaining)
            self.stats.steps += num_steps
            self.stats.wall_time_s += time.perf_counter() - start
            return
        for seq in batch.prefill:
            self.stats.prefill_tokens += seq.num_new_tokens
            self.stats.cached_tokens += seq.num_cached_tokens
        hidden, spans = self.runner.run(batch)
        if self.h2o:
            for seq in batch.prefill:
                if seq.kv_row >= 0:
                    self.block_manager.shrink(seq)
        seqs = batch.decode + batch.prefill
        gen = [i for i, s in enumerate(seqs) if s.kind == SeqKind.GENERATE]
        forks: list[tuple[Sequence, Sequence]] = []
        if gen:
            rows = [spans[i][1] - 1 for i in gen]
            logits = self.runner.logits(hidden[torch.tensor(rows, device=hidden.device)])
            gen_seqs = [seqs[i] for i in gen]
            # The siblings of a just-prefilled n > 1 request draw their first token from its logits row.
            expand = list(range(len(gen)))
            for j, i in enumerate(gen):
                seq = seqs[i]
                if seq.siblings and i >= len(batch.decode):
                    forks.extend((seq, sib) for sib in seq.siblings)
                    gen_seqs.extend(seq.siblings)
                    expand.extend([j] * len(seq.siblings))
                    seq.siblings = []
            if forks:
                logits = logits[torch.tensor(expand, device=logits.device)]
            tokens, token_logprobs, log_norm = self.sampler(
                logits,
                [s.params for s in gen_seqs],
                [s.sample_seed for s in gen_seqs],
                [len(s) - s.num_prompt_tokens for s in gen_seqs],
            )
            if self.forcing:
                self._force(gen_seqs, logits, log_norm, tokens, token_logprobs)
            for j, seq in enumerate(gen_seqs):
                top = None
                if seq.params.logprobs:
                    top = (logits[j] - log_norm[j]).topk(seq.params.logprobs)
                self._append_token(seq, tokens[j], token_logprobs[j], top)
        parents = {id(parent) for parent, _ in forks}
        scored = [(seqs[i], spans[i]) for i, s in enumerate(seqs) if s.kind == SeqKind.SCORE]
        if scored:
            self._score(hidden, scored)
        for i, seq in enumerate(seqs):
            start_row, end_row = spans[i]
            if seq.kind == SeqKind.SCORE:
                self._finish(seq)
            elif seq.kind == SeqKind.EMBED:
                seq.result = hidden[start_row:end_row].float().mean(0)
                self._finish(seq)
            elif seq.is_finished:
                if id(seq) not in parents:
                    self._finish(seq)
            elif i >= len(batch.decode):
                self.scheduler.finish_prefill(seq)
        for parent, sib in forks:
            if sib.is_finished:
                self._finish(sib)
            elif self.scheduler.fork_sibling(parent, sib):
                self.stats.cached_tokens += sib.num_prompt_tokens
        for parent, _ in forks:
            if parent.is_finished and id(parent) in parents:
                parents.discard(id(parent))
                self._finish(parent)
        self.stats.steps += 1
        self.stats.wall_time_s += time.perf_counter() - start

    def _remaining(self, seq: Sequence) -> int:
        """Tokens ``seq`` may still generate before ``max_tokens`` or ``max_model_len`` stops it."""
        length = len(seq.token_ids)
        return max(1, min(seq.params.max_tokens - length + seq.num_prompt_tokens, self.config.max_model_len - length))

    def _num_decode_steps(self, batch) -> tuple[int, list[int]]:
        """How many steps to decode ``batch`` before returning to the scheduler, and how many tokens each of its
        sequences may still generate: ``num_scheduler_steps`` for a pure decode batch of generating sequences that
        need no top-k log-probs, while nothing waiting could join it, and while the free blocks cover every
        sequence's next steps; else 1 (also under ``kv_policy="h2o"`` and while a teacher-forced sequence runs,
        whose steps need the host). The blocks are reserved here."""
        steps = self.config.num_scheduler_steps
        seqs = batch.decode
        if steps <= 1 or not seqs or batch.prefill or batch.copies or self.h2o or self.forcing:
            return 1, []
        if self.scheduler.waiting and len(seqs) < self.config.max_num_seqs:
            return 1, []
        if any(s.kind != SeqKind.GENERATE or s.params.logprobs for s in seqs):
            return 1, []
        remaining = [self._remaining(s) for s in seqs]
        steps = min(steps, max(remaining))
        bm = self.block_manager
        wanted = [len(s.token_ids) + min(steps, r) - 1 for s, r in zip(seqs, remaining, strict=True)]
        needed = sum(bm.blocks_needed(w) - len(s.block_table) for s, w in zip(seqs, wanted, strict=True))
        if steps <= 1 or needed > bm.num_free_blocks:
            return 1, []
        for seq, w in zip(seqs, wanted, strict=True):
            bm.reserve(seq, w)
        return steps, remaining

    def _decode_steps(self, seqs: list[Sequence], num_steps: int, remaining: list[int]) -> None:
        """Run ``num_steps`` decode steps on the device, then append each sequence's tokens up to where it stops
        (tokens decoded past a stop are dropped; their KV lies in blocks no cached prefix can reach)."""
        dev = self.device
        batch = self.sampler.prepare([s.params for s in seqs], [s.sample_seed for s in seqs], dev, torch.float32)
        draws = None
        if batch.rows:
            first = torch.tensor([len(seqs[i]) - seqs[i].num_prompt_tokens for i in batch.rows], device=dev)
            draws = uniform_draws(batch.seeds[:, None], first[:, None] + torch.arange(num_steps, device=dev)).T

        def next_tokens(logits: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
            tokens, logprobs, _ = self.sampler.sample(logits, batch, None if draws is None else draws[step])
            return tokens, logprobs

        tokens, logprobs = self.runner.decode_steps(seqs, remaining, num_steps, next_tokens)
        for seq, seq_tokens, seq_logprobs, left in zip(seqs, tokens, logprobs, remaining, strict=True):
            count = min(num_steps, left)
            self._append_tokens(seq, seq_tokens[:count], seq_logprobs[:count], left)
            if seq.is_finished:
                self._finish(seq)

    def _append_tokens(self, seq: Sequence, tokens: list[int], logprobs: list[float], remaining: int) -> None:
        """Append a multi-step round's tokens up to the first that stops ``seq``: the same outcome as
        ``_append_token`` per token with the block manager's ``append`` in between, in bulk."""
        params = seq.params
        if params.stop_list:
            for step, (token, logprob) in enumerate(zip(tokens, logprobs, strict=True)):
                if step:
                    self.block_manager.append(seq)
                self._append_token(seq, token, logprob)
                if seq.is_finished:
                    return
            return
        count, reason = len(tokens), None
        stop_eos = not params.ignore_eos
        for j, token in enumerate(tokens):
            if (stop_eos and token in self.eos_ids) or token in params.stop_token_ids:
                count, reason = j + 1, "stop"
                break
        if reason is None and count == remaining:
            reason = "length"
        start = len(seq.token_ids)
        seq.token_ids.extend(tokens[:count])
        for logprob in logprobs[:count]:  # one at a time: the same float sums as single steps
            seq.cumulative_logprob += logprob
        if params.logprobs is not None:
            seq.logprobs.extend({t: lp} for t, lp in zip(tokens[:count], logprobs[:count], strict=True))
        self.stats.generated_tokens += count
        self.block_manager.register_filled(seq, start + 1, start + count - 1)
        if reason is not None:
            seq.finish_reason = reason
            seq.status = seq.status.FINISHED
            seq.text = self.tokenizer.decode(seq.output_token_ids)

    def _score(self, hidden: torch.Tensor, scored: list[tuple[Sequence, tuple[int, int]]]) -> None:
        """Log-prob of each score target: a row per target (a choice continuation) or, for a prompt, every
        choice's first token from its last row. All rows of the step go through the LM head together, in chunks
        that bound the [rows, vocab] buffer, with one device-to-host copy per chunk."""
        rows: list[int] = []
        targets: list[int] = []
        for seq, (start, end) in scored:
            if end - start == len(seq.score_targets):
                rows.extend(range(start, end))
            else:
                rows.extend([end - 1] * len(seq.score_targets))
            targets.extend(seq.score_targets)
        values: list[float] = []
        for lo in range(0, len(rows), _SCORE_CHUNK):
            idx = torch.tensor(rows[lo : lo + _SCORE_CHUNK], device=hidden.device)
            tgt = torch.tensor(targets[lo : lo + _SCORE_CHUNK], device=hidden.device)
            lp = torch.log_softmax(self.runner.logits(hidden[idx]), dim=-1)
            values.extend(lp.gather(1, tgt[:, None]).squeeze(1).tolist())
        at = 0
        for seq, _ in scored:
            seq.result = values[at : at + len(seq.score_targets)]
            at += len(seq.score_targets)

    @staticmethod
    def _force(seqs: list[Sequence], logits: torch.Tensor, log_norm: torch.Tensor, tokens: list[int],
               token_logprobs: list[float]) -> None:
        """Replace the sampled token of each teacher-forced sequence by its next forced token (and its
        log-prob under the model)."""
        rows = [j for j, s in enumerate(seqs) if s.forced is not None]
        if not rows:
            return
        forced = [seqs[j].forced[len(seqs[j]) - seqs[j].num_prompt_tokens] for j in rows]
        idx = torch.tensor(rows, device=logits.device)
        tgt = torch.tensor(forced, device=logits.device)
        lps = (logits[idx, tgt] - log_norm[idx]).tolist()
        for j, t, lp in zip(rows, forced, lps, strict=True):
            tokens[j], token_logprobs[j] = t, lp

    def _finish(self, seq: Sequence) -> None:
        if seq.forced is not None:
            seq.forced = None
            self.forcing -= 1
        self.scheduler.finish(seq)
        for child in self.children.pop(seq.seq_id, []):
            self.scheduler.add(child, front=True)

    def _append_token(self, seq: Sequence, token: int, logprob: float, top=None) -> None:
        """Append ``token`` (log-prob ``logprob``; ``top``: the step's top-k log-probs when asked for)."""
        params = seq.params
        seq.token_ids.append(token)
        self.stats.generated_tokens += 1
        seq.cumulative_logprob += logprob
        if params.logprobs is not None:
            entry = {token: logprob}
            if top is not None:
                entry.update(zip(top.indices.tolist(), top.values.tolist(), strict=False))
            seq.logprobs.append(entry)
        num_out = len(seq) - seq.num_prompt_tokens
        if (token in self.eos_ids and not params.ignore_eos) or token in params.stop_token_ids:
            seq.finish_reason = "stop"
        elif params.stop_list and self._hit_stop_string(seq):
            seq.finish_reason = "stop"
        elif num_out >= params.max_tokens or len(seq) >= self.config.max_model_len:
            seq.finish_reason = "length"
        if seq.finish_reason is not None:
            seq.status = seq.status.FINISHED
            if seq.stop_text is None:
                seq.text = self.tokenizer.decode(seq.output_token_ids)

    def _hit_stop_string(self, seq: Sequence) -> bool:
        """Decode the output so far and cut it at the first stop string, which may span several tokens."""
        text = self.tokenizer.decode(seq.output_token_ids)
        longest = max(len(s) for s in seq.params.stop_list)
        window_start = max(0, seq.stop_scan_from - longest)
        hits = [h for h in (text.find(s, window_start) for s in seq.params.stop_list) if h >= 0]
        seq.stop_scan_from = len(text)
        if hits:
            seq.stop_text = seq.text = text[: min(hits)]
            return True
        return False

    def reset(self) -> None:
        """Drop every queued and running sequence (after an error) so the engine keeps serving."""
        sched = self.scheduler
        for seq in list(sched.running) + list(sched.waiting):
            if seq.block_table:
                self.block_manager.deallocate(seq)
        sched.running.clear()
        sched.waiting.clear()
        for children in self.children.values():
            for child in children:
                if child.parent is not None and child.parent.block_table:
                    self.block_manager.deallocate(child.parent)
                    child.parent.pending_children = 0
        self.children.clear()
        self.forcing = 0
