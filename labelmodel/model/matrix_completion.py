"""Snorkel / MeTaL's matrix-completion label model, in torch (CPU or GPU).

With one-hot votes l (m*k wide, abstain = all zero) and O = E[l l^T], conditional independence given Y
makes every off-diagonal block of O low rank: O_ij = mu_i diag(p) mu_j^T, where mu[(j, l), y] =
P(LF j votes l | Y = y). The model fits mu to the observed blocks (those not on the diagonal and not
between dependent LFs) plus the single-LF marginals diag(O) = mu p, starting from accurate-ish LFs so
the solution picks the non-permuted optimum.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from labelmodel.errors import LabelModelError
from labelmodel.inference import second_moments
from labelmodel.matrix import LabelMatrix
from labelmodel.model.tables import TableModel, resolve_dependencies

logger = logging.getLogger(__name__)

MAX_WIDTH = 4096


class MatrixCompletion(TableModel):
    """Fit class-conditional vote probabilities to the observed overlap matrix.

    Parameters
    ----------
    cardinality : int, optional
    n_epochs : int
        Optimizer steps (full-batch Adam on the small m*k x m*k problem).
    lr : float
    l2 : float
        Ridge pull of mu towards its initial value (LFs better than random). The default 0.1 was chosen on
        the WRENCH valid splits (average accuracy over youtube, sms, trec, hausa among 0 .. 1); without it
        full-batch Adam drifts to poor optima on many-class, single-polarity LFs (trec).
    prec_init : float
        Initial P(vote correct | votes) of every LF.
    model_abstains : bool
        Score an abstain as the outcome P(abstain | Y = y) = 1 - sum_l mu[(j, l), y]; False scores votes only,
        as Snorkel does.
    dependencies : None | "learn" | list of (i, j)
        Blocks of dependent LF pairs are left out of the fit, and each group counts as one source.
    device : "cpu" | "cuda" | torch.device
    seed : int
    """

    def __init__(
        self,
        cardinality: int | None = None,
        n_epochs: int = 500,
        lr: float = 0.01,
        l2: float = 0.1,
        prec_init: float = 0.7,
        model_abstains: bool = True,
        dependencies: object = None,
        device: str = "cpu",
        seed: int = 0,
    ) -> None:
        super().__init__(cardinality=cardinality, seed=seed)
        self.model_abstains = model_abstains
        self.n_epochs = n_epochs
        self.lr = lr
        self.l2 = l2
        self.prec_init = prec_init
        self.dependencies = dependencies
        self.device = device

    def _fit(self, lm: LabelMatrix, class_balance: np.ndarray | None, dev: tuple | None) -> None:
        m, k = lm.m, lm.cardinality
        if m * k > MAX_WIDTH:
            raise LabelModelError(
                f"MatrixCompletion needs an (m*k)^2 overlap matrix; m*k = {m * k} exceeds {MAX_WIDTH}. "
                "Use DawidSkene(confusion='diagonal') or Triplet for many classes"
            )
        if not 0 < self.prec_init < 1:
            raise LabelModelError(f"prec_init must lie in (0, 1), got {self.prec_init}")
        self.dependencies_, self.lf_weights_ = resolve_dependencies(self.dependencies, lm, self.seed)
        O = second_moments(lm)
        p = class_balance if class_balance is not None else np.full(k, 1.0 / k)
        coverage = lm.coverage_counts() / lm.n
        mask = np.ones((m, m), dtype=bool)
        np.fill_diagonal(mask, False)
        for i, j in self.dependencies_:
            mask[i, j] = mask[j, i] = False
        block_mask = np.kron(mask, np.ones((k, k), dtype=bool))

        device = torch.device(self.device)
        torch.manual_seed(self.seed)
        dtype = torch.float64 if device.type == "cpu" else torch.float32
        O_t = torch.as_tensor(O, dtype=dtype, device=device)
        P_t = torch.as_tensor(p, dtype=dtype, device=device)
        mask_t = torch.as_tensor(block_mask, device=device)
        diag_t = torch.diagonal(O_t)
        init = np.zeros((m, k, k))
        for j in range(m):
            init[j] = coverage[j] * (1 - self.prec_init) / max(k - 1, 1)
            init[j][np.arange(k), np.arange(k)] = coverage[j] * self.prec_init
        init_t = torch.as_tensor(init.reshape(m * k, k), dtype=dtype, device=device)
        mu = init_t.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([mu], lr=self.lr)
        for _ in range(self.n_epochs):
            optimizer.zero_grad()
            fitted = mu @ torch.diag(P_t) @ mu.T
            loss = ((O_t - fitted)[mask_t] ** 2).sum()
            loss = loss + ((mu @ P_t - diag_t) ** 2).sum()
            if self.l2:
                loss = loss + self.l2 * ((mu - init_t) ** 2).sum()
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                mu.clamp_(1e-6, 1.0)
        self.final_loss_ = float(loss.detach())
        mu_np = mu.detach().cpu().numpy().astype(np.float64)
        if class_balance is None:
            mu_np = _break_permutation(mu_np.reshape(m, k, k)).reshape(m * k, k)
        mu_np = np.clip(mu_np, 1e-6, 1.0)
        abstain = np.clip(1.0 - mu_np.reshape(m, k, k).sum(axis=1), 1e-6, 1.0)
        self.log_table_ = np.log(mu_np)
        self.log_abstain_ = np.log(abstain) if self.model_abstains else None
        self.log_prior_ = np.log(p)
        for name in ("log_correct_", "log_wrong_"):
            self.__dict__.pop(name, None)


def _break_permutation(mu: np.ndarray) -> np.ndarray:
    """Relabel the latent classes so that LFs are most often right (a uniform prior is symmetric in them).

    mu[j, l, y] = P(vote l | Y = y); the result is mu[:, :, sigma] for the sigma maximising
    sum_y mu[:, y, sigma(y)].
    """
    m, k, _ = mu.shape
    if k > 8:
        return mu
    from itertools import permutations

    best, best_score = None, -np.inf
    for perm in permutations(range(k)):
        score = sum(mu[:, y, perm[y]].sum() for y in range(k))
        if score > best_score:
            best, best_score = perm, score
    return mu[:, :, list(best)]
