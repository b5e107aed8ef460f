"""Ask Me Anything: run P prompt chains over the data, then combine their votes with the label model.

    from prompting.ama import AMA
    from prompting.tasks import get_task

    task = get_task("rte")
    train, test = task.load()
    ama = AMA(task.chains(5), cardinality=task.cardinality)
    result = ama.run(llm, test.to_dict(orient="records"), task.pool(train))   # result.votes: (n, 5)
    labels = ama.aggregate(result.votes)                                        # label model (dependencies learned)

Every chain's step k for all rows is one engine call, so a chain's instruction and demos are prefilled once and
served from the prefix cache for every other row.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from prompting.chains import Chain, ChainOutput, DemoPool, run_chain
from prompting.errors import PromptingError

logger = logging.getLogger(__name__)

MIN_CHAINS = 3
MAX_CHAINS = 10


@dataclass
class AMAResult:
    """Votes of P chains over n rows.

    Attributes
    ----------
    votes
        (n, P) int64, class index or -1 (abstain).
    names
        Chain names, one per column.
    outputs
        Each chain's :class:`ChainOutput` (uncalibrated votes, class scores, generated texts).
    calls
        Engine calls made (one per chain step).
    wall_s
        Seconds spent.
    """

    votes: np.ndarray
    names: list[str]
    outputs: list[ChainOutput] = field(default_factory=list)
    calls: int = 0
    wall_s: float = 0.0


def check_chain_count(count: int, low: int = MIN_CHAINS, high: int = MAX_CHAINS) -> int:
    """Validate P, the number of chains."""
    if not isinstance(count, int) or isinstance(count, bool) or not low <= count <= high:
        raise PromptingError(f"AMA runs {low} to {high} chains; got {count!r} (set chains/num_chains in that range)")
    return count


class AMA:
    """P prompt chains whose votes a label model combines.

    Parameters
    ----------
    chains
        3 to 10 chains voting over the same classes.
    cardinality
        Number of classes (default: the chains').
    method
        ``labelmodel.LabelModel`` method used by :meth:`aggregate`.
    dependencies
        None (default) treats chains as independent given the label; ``"learn"`` learns which chains are
        correlated, as AMA does (on a few hundred rows it measured worse here: docs/prompting.md).
    seed
        Seed of the label model and of generation requests.
    """

    def __init__(self, chains: Sequence[Chain], cardinality: int | None = None, method: str = "auto",
                 dependencies: Any = None, seed: int = 0) -> None:
        chains = list(chains)
        check_chain_count(len(chains))
        names = [c.name for c in chains]
        if len(set(names)) != len(names):
            raise PromptingError(f"AMA: chain names must be unique, got {names}")
        cards = {c.cardinality for c in chains}
        if len(cards) != 1:
            raise PromptingError(f"AMA: chains vote over different numbers of classes {sorted(cards)}")
        self.cardinality = cardinality or cards.pop()
        if self.cardinality != chains[0].cardinality:
            raise PromptingError(
                f"AMA: cardinality={cardinality} but the chains vote over {chains[0].cardinality} classes"
            )
        self.chains = chains
        self.method = method
        self.dependencies = dependencies
        self.seed = seed
        self.model_: Any = None

    def run(self, engine: Any, rows: Sequence[Mapping[str, Any]], pool: DemoPool | None = None) -> AMAResult:
        """Run every chain over ``rows`` (one engine call per chain step, all rows at once).

        Parameters
        ----------
        engine
            Engine-like object (``score`` / ``generate``), e.g. ``engine.LLM`` or a cached engine.
        rows
            The rows (column -> value).
        pool
            Labelled demos (the task's train split).

        Returns
        -------
        AMAResult
        """
        start = time.perf_counter()
        outputs: list[ChainOutput] = []
        for chain in self.chains:
            t0 = time.perf_counter()
            outputs.append(run_chain(engine, chain, rows, pool, seed=self.seed))
            logger.info("chain %s: %d rows in %.1fs", chain.name, len(rows), time.perf_counter() - t0)
        votes = np.stack([o.votes for o in outputs], axis=1) if rows else np.zeros((0, len(self.chains)), np.int64)
        return AMAResult(votes.astype(np.int64), [c.name for c in self.chains], outputs,
                         sum(o.calls for o in outputs), time.perf_counter() - start)

    def aggregate(self, votes: np.ndarray, return_probs: bool = False) -> Any:
        """Fit the label model on the votes (no gold) and label every row.

        Parameters
        ----------
        votes
            (n, m) votes: the chains', optionally with more columns (e.g. Embroid's).
        return_probs
            Also return the (n, C) class probabilities.

        Returns
        -------
        numpy.ndarray or (numpy.ndarray, numpy.ndarray)
        """
        preds, probs, self.model_ = label_votes(votes, self.cardinality, self.method, self.dependencies, self.seed)
        return (preds, probs) if return_probs else preds


def label_votes(votes: np.ndarray, cardinality: int, method: str = "auto", dependencies: Any = None,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray, Any]:
    """Label model over a vote matrix: ``(predictions, probabilities, fitted model)``.

    Dependency learning needs enough rows and votes; when it fails the model is refitted without it (logged).
    """
    from labelmodel import LabelModel

    votes = np.asarray(votes, dtype=np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = LabelModel(method=method, cardinality=cardinality, dependencies=dependencies, seed=seed)
        try:
            model.fit(votes)
        except Exception as err:  # noqa: BLE001 - any failure of the structure solve falls back to no dependencies
            if dependencies is None:
                raise
            logger.warning("label model with dependencies=%r failed (%s); fitting without", dependencies, err)
            model = LabelModel(method=method, cardinality=cardinality, seed=seed)
            model.fit(votes)
        preds, probs = model.predict(votes, tie_break="random", return_probs=True)
    return np.asarray(preds, dtype=np.int64), np.asarray(probs, dtype=np.float64), model
