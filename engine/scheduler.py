"""Continuous batching under a token budget, mixing decode and prefill; preemption by recompute."""

import logging
from collections import deque
from dataclasses import dataclass, field

from engine.block_manager import BlockManager
from engine.config import EngineConfig
from engine.errors import EngineError
from engine.sequence import SeqKind, SeqStatus, Sequence

logger = logging.getLogger(__name__)


@dataclass
class Batch:
    """One step's work: decode sequences (one new token each) then prefill sequences."""

    decode: list[Sequence] = field(default_factory=list)
    prefill: list[Sequence] = field(default_factory=list)
    copies: list[tuple[int, int]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.decode or self.prefill)


class Scheduler:
    """Keeps the waiting queue and the running (decoding) set, and builds each step's batch."""

    def __init__(self, config: EngineConfig, block_manager: BlockManager) -> None:
        self.config = config
        self.block_manager = block_manager
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0
        self.pending_copies: list[tuple[int, int]] = []

    def add(self, seq: Sequence, front: bool = False) -> None:
        seq.status = SeqStatus.WAITING
        if front:
            self.waiting.appendleft(seq)
        else:
            self.waiting.append(seq)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def _preempt(self, seq: Sequence) -> None:
        self.block_manager.deallocate(seq)
        self.num_preemptions += 1
        seq.logits_from = len(seq) - 1
        self.add(seq, front=True)
        logger.debug("preempted seq %d (%d tokens)", seq.seq_id, len(seq))

    def _schedule_decode(self, batch: Batch) -> None:
        bm = self.block_manager
        running = self.running
        kept: list[Sequence] = []
        while running:
            seq = running.pop(0)
            while not bm.can_append(seq):
                if running:
                    self._preempt(running.pop())
                else:
                    self._preempt(seq)
                    seq = None
                    break
            if seq is not None:
                bm.append(seq)
                kept.append(seq)
        self.running = kept
        batch.decode = list(kept)

    def _release_parent(self, child: Sequence) -> None:
        parent = child.parent
        child.parent = None
        parent.pending_children -= 1
        if parent.pending_children == 0:
            self.block_manager.deallocate(parent)

    def _try_admit(self, seq: Sequence, batch: Batch, budget: int) -> bool:
        """Allocate ``seq`` if blocks and the token budget allow. The budget is checked before allocating, so
        blocks registered in the prefix cache are always computed in this step."""
        bm = self.block_manager
        if seq.parent is not None:
            if batch and len(seq) - len(seq.parent) > budget:
                return False
            if not bm.can_fork(seq.parent, seq):
                return False
            batch.copies.extend(bm.fork(seq.parent, seq))
            self._release_parent(seq)
            return True
        if batch and len(seq) - bm.num_hit_tokens_for(seq) > budget:
            return False
        if not bm.can_allocate(seq):
            return False
        bm.allocate(seq)
        return True

    def schedule(self) -> Batch:
        """Decode every running sequence (preempting the newest when blocks run out), then admit waiting
        sequences while the token budget, the sequence cap and the free blocks allow."""
        batch = Batch(copies=self.pending_copies)
        self.pending_copies = []
        self._schedule_decode(batch)
        budget = self.config.max_num_batched_tokens - len(batch.decode)
        while self.waiting and len(batch.decode) + len(batch.prefill) < self.config.max_num_seqs:
            seq = self.waiting[0]
            if not self._try_admit(seq, batch, budget):
                if not batch and seq.parent is not None:
                    self._release_parent(seq)
                    continue
                if not batch:
                    raise EngineError(
                        f"a {len(seq)}-token sequence does not fit the KV cache of "
                        f"{len(self.block_manager.blocks)} blocks; raise kv_cache_memory or lower "
                        "max_model_len"
                    )
                break
            self.waiting.popleft()
            seq.status = SeqStatus.RUNNING
            budget -= seq.num_new_tokens
            batch.prefill.append(seq)
        return batch

    def finish_prefill(self, seq: Sequence) -> None:
        """After its prefill a generating sequence decodes from the next step on."""
        if seq.kind == SeqKind.GENERATE and not seq.is_finished:
            self.running.append(seq)

    def fork_sibling(self, parent: Sequence, sibling: Sequence) -> bool:
        """Start ``sibling`` (the prompt of ``parent``, just prefilled, plus its own first token) decoding on
        the parent's prompt blocks; True if it did. Without room (sequence cap or free blocks) it waits and is
        prefilled later, like a preempted sequence."""
        bm = self.block_manager
        prompt = sibling.num_prompt_tokens
        if len(self.running) < self.config.max_num_seqs and bm.can_fork(parent, sibling, prompt):
            self.pending_copies.extend(bm.fork(parent, sibling, prompt))
            sibling.status = SeqStatus.RUNNING
            self.running.append(sibling)
            return True
        sibling.logits_from = len(sibling) - 1
        self.add(sibling, front=True)
        return False

    def finish(self, seq: Sequence) -> None:
        seq.status = SeqStatus.FINISHED
        if seq.pending_children == 0:
            self.block_manager.deallocate(seq)
        if seq in self.running:
            self.running.remove(seq)
