"""Learn LF-LF dependency edges from the votes alone (sparse + low-rank inverse covariance).

Varma et al. (ICML 2019), as used by AMA (Arora et al. 2022): with the true class Y latent, the inverse of
the observed covariance of the LF outputs splits as ``Sigma_O^{-1} = S - L``, where the off-diagonal support
of S is the dependency graph among the LFs and L (positive semi-definite, rank about k - 1) is what
marginalising Y leaves behind. We solve the convex programme

    min  -logdet(R) + tr(Sigma R) + sparsity * sum_{i != j} sqrt(d_i d_j) ||S_ij||_F + low_rank * tr(L)
    s.t. R = S - L,  R > 0,  L >= 0

(S_ij the block of LFs i and j, d_i the number of columns of LF i) by ADMM (Ma, Xue and Zou 2013) with
closed-form steps: an eigen-decomposition for the logdet term, block soft-thresholding for S (plain
soft-thresholding when every LF is one column, as for k = 2) and eigenvalue thresholding for L. Sigma is the
correlation matrix of the encoded votes, so the hyper-parameters do not depend on coverage or scale.

Encoding of one LF's votes (the sufficient statistics of a discrete variable, Loh and Wainwright 2013):

- k = 2: one signed column, class 1 -> +1, class 0 -> -1, abstain -> 0 (as in Varma et al.).
- k > 2: one indicator column per class the LF ever votes, with abstain as the reference state (all zeros).
  Dropping a class column instead would merge that class with abstain. The indicators only sum to a
  constant when the LF never abstains; then the column of its most frequent class is dropped.

Columns with zero variance (a constant LF, an LF that never votes) are dropped; an LF left without columns
gets no edges. An exact copy of an earlier LF (same or negated columns) makes Sigma singular and would take
all of its original's partial correlation; it is left out of the solve, joined to its original by an edge of
weight 1 and given its original's other edges. The LF-level weight of a pair is the Frobenius norm of its
block of the partial-correlation matrix ``-S_ij / sqrt(S_ii S_jj)`` (for k = 2 the absolute partial
correlation).

The votes are read in row chunks into float32 blocks of at most ``_CHUNK_ENTRIES`` entries; counts within a
block stay below 2**24, so each block's Gram matrix is exact before it is added in float64. Cost: one pass
over L for class counts, one for the Gram matrix (O(n p^2)), then O(p^3) per ADMM iteration, p the number of
encoded columns (p = m for k = 2). Above ``max_dim`` columns the function raises rather than run for hours.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from labelmodel.errors import LabelModelError

__all__ = [
    "DependencyStructure",
    "dependency_components",
    "dependency_scores",
    "learn_dependencies",
    "learn_dependency_structure",
]

logger = logging.getLogger(__name__)

_CHUNK_ENTRIES = 1 << 23


@dataclass(frozen=True)
class DependencyStructure:
    """Learned dependency structure: edges (i < j, sorted), m x m edge weights and solver diagnostics.

    ``weights[i, j]`` is the partial-correlation strength of the pair (0 where S has no entry);
    ``excluded`` lists the LFs without variance (never vote, or always vote the same), which get no edges;
    ``rank`` is the rank of the low-rank part L.
    """

    edges: list[tuple[int, int]]
    weights: np.ndarray
    excluded: list[int] = field(default_factory=list)
    rank: int = 0
    iterations: int = 0
    converged: bool = True


def learn_dependencies(
    L: np.ndarray,
    cardinality: int | None = None,
    *,
    sparsity: float = 0.1,
    low_rank: float = 0.5,
    threshold: float = 0.1,
    max_edges: int | None = None,
    max_iter: int = 300,
    tol: float = 1e-5,
    ridge: float = 1e-3,
    max_dim: int = 3000,
    seed: int = 0,
) -> list[tuple[int, int]]:
    """Dependency edges (i, j), i < j, sorted, between the columns (LFs) of the label matrix L.

    L is n x m with classes 0..k-1 and -1 for abstain. ``sparsity`` weighs the group-L1 penalty on S
    (larger: fewer edges), ``low_rank`` the trace penalty on L (larger: lower rank), ``threshold`` is the
    smallest partial correlation reported as an edge, ``max_edges`` keeps only the strongest edges,
    ``ridge`` is added to the diagonal of the correlation matrix. ``learn_dependency_structure`` also
    returns the weights behind the edges.
    """
    return learn_dependency_structure(
        L,
        cardinality,
        sparsity=sparsity,
        low_rank=low_rank,
        threshold=threshold,
        max_edges=max_edges,
        max_iter=max_iter,
        tol=tol,
        ridge=ridge,
        max_dim=max_dim,
        seed=seed,
    ).edges


def learn_dependency_structure(
    L: np.ndarray,
    cardinality: int | None = None,
    *,
    sparsity: float = 0.1,
    low_rank: float = 0.5,
    threshold: float = 0.1,
    max_edges: int | None = None,
    max_iter: int = 300,
    tol: float = 1e-5,
    ridge: float = 1e-3,
    max_dim: int = 3000,
    seed: int = 0,
) -> DependencyStructure:
    """Like ``learn_dependencies`` but returns the edge weights and solver diagnostics as well.

    The solver is deterministic; ``seed`` is accepted for the common estimator signature and unused.
    """
    del seed
    _check_hyper_parameters(sparsity, low_rank, threshold, max_edges, max_iter, tol, ridge, max_dim)
    L = _check_label_matrix(L)
    m = L.shape[1]
    k = _check_cardinality(L, cardinality)
    owner, colmap = _encoding_columns(L, k)
    p = owner.size
    if p > max_dim:
        raise LabelModelError(
            f"the dependency model needs a {p} x {p} covariance ({m} LFs, {k} classes) and costs O(p^3) per "
            f"iteration; pass max_dim={p} to run it anyway, or learn the structure on a subset of the LFs "
            "(for example each group of similar prompts)"
        )
    excluded = sorted(set(range(m)) - set(owner.tolist()))
    weights = np.zeros((m, m))
    rank, iterations, converged = 0, 0, True
    duplicate_of: dict[int, int] = {}
    if np.unique(owner).size >= 2:
        sigma = _correlation(L, k, colmap, p)
        duplicate_of = _duplicates(sigma, owner)
        unique = ~np.isin(owner, list(duplicate_of))
        owner, sigma = owner[unique], sigma[np.ix_(unique, unique)]
    if np.unique(owner).size >= 2:
        sigma[np.diag_indices(owner.size)] += ridge
        bounds = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
        S, Lr, iterations, converged = _admm(sigma, bounds, sparsity, low_rank, max_iter, tol)
        if not converged:
            logger.warning(
                "dependency ADMM stopped after %d iterations short of tol=%g; the edges may be approximate "
                "(raise max_iter)",
                iterations,
                tol,
            )
        d = np.sqrt(np.clip(np.diag(S), 1e-12, None))
        partial = S / np.outer(d, d)
        block_norm = np.sqrt(np.add.reduceat(np.add.reduceat(partial**2, bounds, axis=0), bounds, axis=1))
        lfs = owner[bounds]
        weights[np.ix_(lfs, lfs)] = block_norm
        np.fill_diagonal(weights, 0.0)
        rank = int(np.sum(np.linalg.eigvalsh(Lr) > 1e-6 * max(1.0, np.abs(Lr).max())))
    _copy_duplicates(weights, duplicate_of)
    edges = _select_edges(weights, threshold, max_edges)
    logger.debug(
        "dependency structure: %d LFs, %d columns, %d duplicates, %d edges, rank(L)=%d, %d iterations",
        m,
        p,
        len(duplicate_of),
        len(edges),
        rank,
        iterations,
    )
    return DependencyStructure(edges, weights, excluded, rank, iterations, converged)


def _select_edges(weights: np.ndarray, threshold: float, max_edges: int | None) -> list[tuple[int, int]]:
    i, j = np.nonzero(np.triu(weights > threshold, 1))
    if max_edges is not None and i.size > max_edges:
        order = np.lexsort((j, i, -weights[i, j]))[:max_edges]
        i, j = i[order], j[order]
    return sorted(zip(i.tolist(), j.tolist(), strict=True))


def dependency_scores(L: np.ndarray, cardinality: int | None = None, **options) -> np.ndarray:
    """The m x m edge weights of ``learn_dependency_structure`` (0 = no entry in S); options as there."""
    return learn_dependency_structure(L, cardinality, **options).weights


def dependency_components(edges: Iterable[tuple[int, int]], m: int) -> list[list[int]]:
    """Connected components of the dependency graph on LFs 0..m-1, each sorted, ordered by smallest member.

    Every LF appears in exactly one component; an LF without edges is a singleton component.
    """
    if isinstance(m, bool) or not isinstance(m, int | np.integer) or m < 0:
        raise LabelModelError(f"m must be a non-negative int (the number of LFs), got {m!r}")
    parent = list(range(m))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for edge in edges:
        if len(edge) != 2:
            raise LabelModelError(f"each edge must be a pair (i, j) of LF indices, got {edge!r}")
        a, b = (int(x) for x in edge)
        if not (0 <= a < m and 0 <= b < m):
            raise LabelModelError(f"edge {edge!r} names an LF outside 0..{m - 1}; pass the right m")
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = {}
    for a in range(m):
        groups.setdefault(find(a), []).append(a)
    return [groups[r] for r in sorted(groups)]


def _check_hyper_parameters(
    sparsity: float,
    low_rank: float,
    threshold: float,
    max_edges: int | None,
    max_iter: int,
    tol: float,
    ridge: float,
    max_dim: int,
) -> None:
    for name, value in (("sparsity", sparsity), ("low_rank", low_rank), ("threshold", threshold)):
        if not np.isfinite(value) or value < 0:
            raise LabelModelError(f"{name} must be a finite number >= 0, got {value!r}")
    for name, value in (("tol", tol), ("ridge", ridge)):
        if not np.isfinite(value) or value <= 0:
            raise LabelModelError(f"{name} must be a finite number > 0, got {value!r}")
    if max_edges is not None and (not isinstance(max_edges, int | np.integer) or max_edges < 0):
        raise LabelModelError(f"max_edges must be None or an int >= 0, got {max_edges!r}")
    for name, value in (("max_iter", max_iter), ("max_dim", max_dim)):
        if not isinstance(value, int | np.integer) or value < 1:
            raise LabelModelError(f"{name} must be an int >= 1, got {value!r}")


def _check_label_matrix(L: object) -> np.ndarray:
    if not isinstance(L, np.ndarray):
        raise LabelModelError(
            f"L must be a numpy array of shape (n, m), got {type(L).__name__}; convert it with np.asarray(L)"
        )
    if L.ndim != 2:
        raise LabelModelError(f"L must be 2-D (n items x m LFs), got shape {L.shape}")
    if L.shape[0] == 0 or L.shape[1] == 0:
        raise LabelModelError(f"L is empty (shape {L.shape}); it needs at least one row and one LF column")
    if L.dtype.kind == "f":
        if np.isnan(L).any():
            raise LabelModelError("L contains NaN; encode abstains as -1 and pass an integer array")
        if not np.isfinite(L).all() or (L != np.round(L)).any():
            raise LabelModelError(
                "L contains non-integer values; pass class indices 0..k-1 and -1 for abstain"
            )
        if L.min() < -1 or L.max() > np.iinfo(np.int32).max:
            raise LabelModelError("L has values outside -1..k-1; use -1 for abstain and 0..k-1 for classes")
        return L.astype(np.int32)
    if L.dtype.kind not in "iu":
        raise LabelModelError(
            f"L must hold integers (class indices, -1 = abstain), got dtype {L.dtype}; cast it with "
            "L.astype(np.int32)"
        )
    if L.dtype.kind == "i" and L.min() < -1:
        raise LabelModelError(
            f"L has value {int(L.min())} below -1; use -1 for abstain and 0..k-1 for classes"
        )
    return L


def _check_cardinality(L: np.ndarray, cardinality: int | None) -> int:
    top = int(L.max())
    if cardinality is None:
        return max(2, top + 1)
    if isinstance(cardinality, bool) or not isinstance(cardinality, int | np.integer) or cardinality < 2:
        raise LabelModelError(f"cardinality must be an int >= 2 (the number of classes), got {cardinality!r}")
    if top >= cardinality:
        raise LabelModelError(
            f"L has label {top} but cardinality={cardinality}; classes must be 0..{cardinality - 1} "
            "(pass the right cardinality)"
        )
    return int(cardinality)


def _chunks(n: int, width: int) -> Iterator[slice]:
    step = max(1, _CHUNK_ENTRIES // max(1, width))
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))


def _encoding_columns(L: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Kept encoded columns: ``owner[c]`` is the LF of column c, ``colmap[j, y]`` the column of (j, y)."""
    n, m = L.shape
    counts = np.zeros((m, k), dtype=np.int64)
    offsets = np.arange(m, dtype=np.int64) * k
    for rows in _chunks(n, m):
        block = L[rows].astype(np.int64)
        voted = block >= 0
        counts += np.bincount((block + offsets)[voted], minlength=m * k).reshape(m, k)
    votes = counts.sum(axis=1)
    colmap = np.full((m, k), -1, dtype=np.int64)
    if k == 2:
        keep = (votes > 0) & ~((counts[:, 0] == n) | (counts[:, 1] == n))
        colmap[keep, :] = np.arange(int(keep.sum()))[:, None]
        return np.flatnonzero(keep), colmap
    keep = (counts > 0) & (counts < n)
    never_abstains = votes == n
    for j in np.flatnonzero(never_abstains & keep.any(axis=1)):
        keep[j, int(np.argmax(np.where(keep[j], counts[j], -1)))] = False
    owner, cls = np.nonzero(keep)
    colmap[owner, cls] = np.arange(owner.size)
    return owner, colmap


def _correlation(L: np.ndarray, k: int, colmap: np.ndarray, p: int) -> np.ndarray:
    n, m = L.shape
    gram = np.zeros((p, p))
    total = np.zeros(p)
    signed = k == 2
    for rows in _chunks(n, max(m, p)):
        block = L[rows]
        X = np.zeros((block.shape[0], p), dtype=np.float32)
        if signed:
            cols = colmap[:, 0]
            kept = cols >= 0
            values = np.where(block[:, kept] == 1, 1.0, np.where(block[:, kept] == 0, -1.0, 0.0))
            X[:, cols[kept]] = values
        else:
            r, j = np.nonzero(block >= 0)
            c = colmap[j, block[r, j]]
            ok = c >= 0
            X[r[ok], c[ok]] = 1.0
        gram += (X.T @ X).astype(np.float64)
        total += X.sum(axis=0, dtype=np.float64)
    mean = total / n
    cov = gram / n - np.outer(mean, mean)
    sd = np.sqrt(np.clip(np.diag(cov), 1e-300, None))
    corr = cov / np.outer(sd, sd)
    np.fill_diagonal(corr, 1.0)
    return (corr + corr.T) / 2


def _duplicates(sigma: np.ndarray, owner: np.ndarray) -> dict[int, int]:
    """LFs whose encoded columns equal (or negate) those of an earlier LF: {duplicate: earliest original}.

    An exact copy makes the covariance singular and, left in, takes every partial correlation of its original
    for itself, hiding the original's other dependencies; it is solved without and given its original's edges.
    """
    close = np.abs(sigma) >= 1.0 - 1e-9
    np.fill_diagonal(close, False)
    duplicate_of: dict[int, int] = {}
    for j in np.unique(owner).tolist():
        cols = np.flatnonzero(owner == j)
        partners = [set(owner[close[c]].tolist()) for c in cols]
        common = set.intersection(*partners) - {j}
        for i in sorted(common):
            if i < j and np.sum(owner == i) == cols.size:
                duplicate_of[j] = duplicate_of.get(i, i)
                break
    return duplicate_of


def _copy_duplicates(weights: np.ndarray, duplicate_of: dict[int, int]) -> None:
    for j, i in duplicate_of.items():
        weights[j, :] = weights[i, :]
        weights[:, j] = weights[:, i]
    for j, i in duplicate_of.items():
        weights[i, j] = weights[j, i] = 1.0
        for j2, i2 in duplicate_of.items():
            if i2 == i and j2 != j:
                weights[j, j2] = 1.0
    np.fill_diagonal(weights, 0.0)


def _admm(
    sigma: np.ndarray, bounds: np.ndarray, sparsity: float, low_rank: float, max_iter: int, tol: float
) -> tuple[np.ndarray, np.ndarray, int, bool]:
    """ADMM for min -logdet R + <sigma, R> + sparsity * group-L1(offdiag S) + low_rank * tr(L), R = S - L."""
    p = sigma.shape[0]
    sizes = np.diff(np.r_[bounds, p]).astype(np.float64)
    group_of = np.repeat(np.arange(bounds.size), sizes.astype(np.int64))
    tau = sparsity * np.sqrt(np.outer(sizes, sizes))
    np.fill_diagonal(tau, 0.0)
    S = np.eye(p)
    Lr = np.zeros((p, p))
    dual = np.zeros((p, p))
    rho = 1.0
    scale = np.sqrt(p)
    iteration = 0
    while iteration < max_iter:
        iteration += 1
        w, U = np.linalg.eigh(S - Lr + (dual - sigma) / rho)
        R = (U * ((w + np.sqrt(w * w + 4.0 / rho)) / 2.0)) @ U.T
        S_prev, L_prev = S, Lr
        A = R + Lr - dual / rho
        norms = np.sqrt(np.add.reduceat(np.add.reduceat(A * A, bounds, axis=0), bounds, axis=1))
        shrink = np.clip(1.0 - (tau / rho) / np.maximum(norms, 1e-300), 0.0, None)
        S = A * shrink[np.ix_(group_of, group_of)]
        S = (S + S.T) / 2
        B = S - R + dual / rho
        w, U = np.linalg.eigh((B + B.T) / 2)
        top = w > low_rank / rho
        Lr = (U[:, top] * (w[top] - low_rank / rho)) @ U[:, top].T
        residual = R - S + Lr
        dual = dual - rho * residual
        primal = np.linalg.norm(residual)
        change = rho * np.linalg.norm((S - Lr) - (S_prev - L_prev))
        if primal < tol * max(scale, np.linalg.norm(R)) and change < tol * max(scale, np.linalg.norm(dual)):
            return S, Lr, iteration, True
        if primal > 10 * change:
            rho *= 2.0
        elif change > 10 * primal:
            rho /= 2.0
    return S, Lr, iteration, False
