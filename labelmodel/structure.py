"""Learning which labeling functions depend on each other, from their votes alone.

With the class Y latent, the inverse covariance of the LFs' outputs is sparse minus low rank (Varma et
al., ICML 2019; the step AMA used to find correlated prompts): Sigma^-1 = S - L, where the off-diagonal
support of S are the LF-LF dependencies and L (rank about k - 1) comes from marginalizing Y. We solve the
convex program

    minimize  -logdet(R) + tr(Sigma R) + lam * (gamma * ||offdiag(S)||_1 + tr(L))
    subject to R = S - L,  L positive semi-definite

with ADMM (Ma, Xue & Zou, 2013): an eigen-decomposition step for the log-det term, soft-thresholding for
S and eigenvalue thresholding for L. Votes are encoded as s = +1 / -1 / 0 for two classes and as one-hot
columns (abstain = all zero) for more; an LF's block of S is summarised by its Frobenius norm.
"""

from __future__ import annotations

import logging

import networkx as nx
import numpy as np

from labelmodel.errors import LabelModelError
from labelmodel.matrix import as_label_matrix

logger = logging.getLogger(__name__)


def vote_correlation(L: object, cardinality: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Correlation matrix of the encoded votes and the LF index of each encoded column.

    Computed in row chunks (never a dense n x (m*k) float64 matrix); constant columns get unit variance.
    """
    lm = as_label_matrix(L, cardinality)
    m, k = lm.m, lm.cardinality
    width = m if k == 2 else m * k
    owner = np.arange(m) if k == 2 else np.repeat(np.arange(m), k)
    gram = np.zeros((width, width))
    total = np.zeros(width)
    for _, block in lm.chunks(lm.chunk_rows(width)):
        if k == 2:
            X = np.where(block == 1, 1.0, np.where(block == 0, -1.0, 0.0)).astype(np.float32)
        else:
            X = np.zeros((block.shape[0], width), dtype=np.float32)
            for c in range(k):
                X[:, c::k] = block == c
        gram += X.T @ X
        total += X.sum(axis=0)
    mean = total / lm.n
    cov = gram / lm.n - np.outer(mean, mean)
    std = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    std[std < 1e-9] = 1.0
    corr = cov / np.outer(std, std)
    np.fill_diagonal(corr, 1.0)
    return corr, owner


def sparse_low_rank(
    sigma: np.ndarray, lam: float, gamma: float, mu: float = 0.1, max_iter: int = 500, tol: float = 1e-5
) -> tuple[np.ndarray, np.ndarray]:
    """ADMM for the sparse + low-rank decomposition of the inverse of ``sigma``; returns (S, L)."""
    p = sigma.shape[0]
    S = np.eye(p)
    Lr = np.zeros((p, p))
    dual = np.zeros((p, p))
    offdiag = ~np.eye(p, dtype=bool)
    for _ in range(max_iter):
        Z = S - Lr + mu * dual - mu * sigma
        d, U = np.linalg.eigh((Z + Z.T) / 2)
        R = (U * ((d + np.sqrt(d**2 + 4 * mu)) / 2)) @ U.T
        A = R + Lr - mu * dual
        S_new = A.copy()
        thresh = mu * lam * gamma
        S_new[offdiag] = np.sign(A[offdiag]) * np.maximum(np.abs(A[offdiag]) - thresh, 0.0)
        B = S_new - R + mu * dual
        d, U = np.linalg.eigh((B + B.T) / 2)
        L_new = (U * np.maximum(d - mu * lam, 0.0)) @ U.T
        dual = dual - (R - S_new + L_new) / mu
        change = max(np.abs(S_new - S).max(), np.abs(L_new - Lr).max())
        S, Lr = S_new, L_new
        if change < tol:
            break
    return S, Lr


def dependency_scores(
    L: object,
    cardinality: int | None = None,
    *,
    lam: float | None = None,
    gamma: float = 0.2,
    max_iter: int = 500,
) -> np.ndarray:
    """(m, m) strength of each learned LF-LF dependency: the Frobenius norm of S's (i, j) block,
    relative to the diagonal. Zero means no edge.

    Parameters
    ----------
    L : label matrix (n x m, -1 = abstain)
    cardinality : int, optional
    lam : float, optional
        Overall penalty; defaults to 2 * sqrt(log(width) / n), floored at 0.05.
    gamma : float
        Weight of the sparsity penalty relative to the low-rank one.
    max_iter : int
    """
    lm = as_label_matrix(L, cardinality)
    if lm.m < 3:
        return np.zeros((lm.m, lm.m))
    corr, owner = vote_correlation(lm)
    width = corr.shape[0]
    if width > 3000:
        raise LabelModelError(
            f"dependency learning needs an eigen-decomposition of a {width} x {width} matrix per step; "
            "pass the edges you know as dependencies=[(i, j), ...], or use fewer LFs or classes"
        )
    lam = lam if lam is not None else max(0.05, 2.0 * np.sqrt(np.log(width) / lm.n))
    S, _ = sparse_low_rank(corr + 1e-3 * np.eye(width), lam=lam, gamma=gamma, max_iter=max_iter)
    scale = np.sqrt(np.abs(np.diag(S)))
    S = S / np.outer(scale, scale)
    m = lm.m
    scores = np.zeros((m, m))
    np.add.at(scores, (owner[:, None], owner[None, :]), S**2)
    scores = np.sqrt(scores)
    np.fill_diagonal(scores, 0.0)
    return scores


def learn_dependencies(
    L: object,
    cardinality: int | None = None,
    *,
    threshold: float = 0.25,
    max_edges: int | None = None,
    lam: float | None = None,
    gamma: float = 0.2,
    seed: int = 0,
) -> list[tuple[int, int]]:
    """Learned dependency edges (i < j) between LFs, strongest first when ``max_edges`` caps them.

    An edge is kept when its normalised strength (see :func:`dependency_scores`) exceeds ``threshold``.
    ``seed`` is accepted for API symmetry; the method is deterministic.
    """
    scores = dependency_scores(L, cardinality, lam=lam, gamma=gamma)
    i, j = np.nonzero(np.triu(scores > threshold, 1))
    order = np.argsort(-scores[i, j], kind="stable")
    edges = [(int(i[o]), int(j[o])) for o in order]
    if max_edges is not None:
        edges = edges[:max_edges]
    logger.info("learned %d LF dependency edges", len(edges))
    return sorted(edges)


def dependency_components(edges: list[tuple[int, int]], m: int) -> list[list[int]]:
    """Connected groups of LFs under the edges, singletons included, each sorted."""
    graph = nx.Graph()
    graph.add_nodes_from(range(m))
    graph.add_edges_from(edges)
    return sorted(sorted(c) for c in nx.connected_components(graph))
