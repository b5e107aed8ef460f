"""Job reports: a JSON summary and a self-contained HTML page.

The summary holds the label distribution, per-source analysis (coverage, overlaps, conflicts, learned
accuracy), pairwise agreement between sources, and accuracy / F1 / confusion matrix when gold labels are
present. The HTML page embeds matplotlib plots as base64 PNG when matplotlib is installed, and shows the same
figures as tables and inline bars when it is not.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from orchestra.errors import OrchestraError
from orchestra.steps.base import Context

logger = logging.getLogger(__name__)


def job_meta(prepared: Any, context: Context) -> dict[str, Any]:
    """What the report needs besides the table: gold column, classes, label models and what they learned."""
    models = []
    for step in prepared.pipeline.steps:
        art = context.artifacts.get(step.name)
        if not isinstance(art, dict) or "model" not in art:
            continue
        model = art["model"]
        acc = getattr(model, "accuracies_", None)
        models.append({"step": step.name, "output": getattr(step, "output", "label"),
                       "chosen": getattr(model, "chosen_", type(model).__name__),
                       "reason": getattr(model, "reason_", ""), "columns": list(art["columns"]),
                       "classes": list(art["classes"]),
                       "accuracies": None if acc is None else [float(a) if np.isfinite(a) else None
                                                               for a in np.asarray(acc, dtype=float).ravel()]})
    classes = list(prepared.task.labels) if prepared.task is not None else None
    stats = context.engine.stats() if hasattr(context.engine, "stats") else None
    return {"name": prepared.config.name, "gold": prepared.config.data.gold, "classes": classes,
            "label_models": models, "cache": stats}


def gold_indices(values: pd.Series, classes: list[str]) -> np.ndarray:
    """Gold labels as class indices: names of ``classes`` or integers 0..k-1; anything else is -1."""
    index = {c: i for i, c in enumerate(classes)}
    out = np.full(len(values), -1, dtype=np.int64)
    for row, v in enumerate(values.tolist()):
        if isinstance(v, str) and v in index:
            out[row] = index[v]
        elif isinstance(v, (int, np.integer, float)) and not pd.isna(v) and float(v).is_integer():
            out[row] = int(v) if 0 <= int(v) < len(classes) else -1
        elif str(v) in index:
            out[row] = index[str(v)]
    return out


def agreement(L: np.ndarray) -> list[list[float | None]]:
    """Pairwise agreement rate of sources over the rows both vote on (None where they never overlap)."""
    m = L.shape[1]
    out: list[list[float | None]] = [[None] * m for _ in range(m)]
    for a in range(m):
        for b in range(m):
            both = (L[:, a] >= 0) & (L[:, b] >= 0)
            if both.any():
                out[a][b] = round(float((L[both, a] == L[both, b]).mean()), 4)
    return out


def build_summary(frame: pd.DataFrame, meta: dict[str, Any]) -> dict[str, Any]:
    """The JSON summary of a labeled table.

    Parameters
    ----------
    frame
        The job's final table.
    meta
        From :func:`job_meta` (stored as meta.json in the job directory).

    Returns
    -------
    dict
    """
    from labelmodel import LFAnalysis, score_predictions

    summary: dict[str, Any] = {"name": meta["name"], "rows": len(frame), "cache": meta.get("cache")}
    models = meta.get("label_models") or []
    if models:
        lm = models[-1]
        columns, classes, label_col = lm["columns"], lm["classes"], lm["output"]
        summary["label_model"] = {k: lm[k] for k in ("step", "chosen", "reason")}
    else:
        columns = [c for c in frame.columns if str(c).startswith("vote_")]
        classes, label_col = meta.get("classes"), None
    if label_col is not None:
        labels = frame[label_col].to_numpy()
        dist = {name: int((labels == i).sum()) for i, name in enumerate(classes)}
        dist["abstain"] = int((labels < 0).sum())
        summary["label_distribution"] = dist
    gold = None
    if meta.get("gold") and classes:
        gold = gold_indices(frame[meta["gold"]], list(classes))
    if columns:
        L = frame[columns].to_numpy(dtype=np.int64)
        weights = models[-1]["accuracies"] if models else None
        if weights is not None and len(weights) == len(columns):
            weights = [np.nan if w is None else w for w in weights]
        else:
            weights = None
        table = LFAnalysis(L, columns).summary(Y=gold, weights=weights)
        table = table.rename(columns={"Emp. Acc.": "Empirical accuracy", "Learned Weight": "Learned accuracy"})
        summary["sources"] = json.loads(table.drop(columns=["j"]).to_json(orient="index"))
        summary["agreement"] = {"sources": columns, "matrix": agreement(L)}
    if gold is not None and label_col is not None and (gold >= 0).any():
        preds = frame[label_col].to_numpy()
        k = len(classes)
        scores = score_predictions(gold, preds, None, ("accuracy", "f1", "coverage"), k)
        keep = gold >= 0
        confusion = np.zeros((k, k), dtype=int)
        for g, p in zip(gold[keep], preds[keep], strict=True):
            if p >= 0:
                confusion[g, p] += 1
        summary["gold"] = {"rows": int(keep.sum()), **{m: round(float(v), 4) for m, v in scores.items()},
                           "confusion": {"classes": list(classes), "matrix": confusion.tolist()}}
    return summary


def _plots(summary: dict[str, Any]) -> list[tuple[str, str]]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.info("matplotlib is not installed: the HTML report has tables and inline bars but no plots")
        return []
    figures: list[tuple[str, Any]] = []
    if "label_distribution" in summary:
        fig, ax = plt.subplots(figsize=(5, 3))
        dist = summary["label_distribution"]
        ax.bar(list(dist), list(dist.values()), color="#4878a8")
        ax.set_title("label distribution")
        figures.append(("label distribution", fig))
    if "sources" in summary:
        names = list(summary["sources"])
        fig, ax = plt.subplots(figsize=(max(5.0, 0.5 * len(names) + 2), 3.2))
        width = 0.27
        for k, metric in enumerate(("Coverage", "Overlaps", "Conflicts")):
            values = [summary["sources"][n].get(metric) or 0.0 for n in names]
            ax.bar(np.arange(len(names)) + (k - 1) * width, values, width, label=metric.lower())
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7)
        ax.set_title("per-source coverage, overlaps, conflicts")
        figures.append(("sources", fig))
    if "gold" in summary:
        confusion = summary["gold"]["confusion"]
        matrix = np.array(confusion["matrix"])
        fig, ax = plt.subplots(figsize=(1.5 + 0.6 * len(matrix), 1.2 + 0.6 * len(matrix)))
        ax.imshow(matrix, cmap="Blues")
        for (i, j), v in np.ndenumerate(matrix):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(matrix)), confusion["classes"], fontsize=7)
        ax.set_yticks(range(len(matrix)), confusion["classes"], fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("gold")
        ax.set_title("confusion matrix")
        figures.append(("confusion matrix", fig))
    if "agreement" in summary:
        names = summary["agreement"]["sources"]
        matrix = np.array([[np.nan if v is None else v for v in row] for row in summary["agreement"]["matrix"]])
        fig, ax = plt.subplots(figsize=(1 + 0.4 * len(names), 1 + 0.4 * len(names)))
        image = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        fig.colorbar(image, ax=ax)
        ax.set_title("agreement between sources")
        figures.append(("agreement", fig))
    out = []
    for title, fig in figures:
        buffer = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buffer, format="png", dpi=100)
        plt.close(fig)
        out.append((title, base64.b64encode(buffer.getvalue()).decode("ascii")))
    return out


def _bars(values: dict[str, float], total: float) -> str:
    rows = []
    for name, v in values.items():
        width = 0 if not total else 100.0 * v / total
        rows.append(f"<tr><td>{html.escape(str(name))}</td><td>{v:g}</td><td class='bar'>"
                    f"<div style='width:{width:.1f}%'></div></td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def _table(records: dict[str, dict[str, Any]]) -> str:
    if not records:
        return ""
    columns = list(next(iter(records.values())))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["source", *columns])
    body = []
    for name, row in records.items():
        cells = "".join(f"<td>{_fmt(row.get(c))}</td>" for c in columns)
        body.append(f"<tr><td>{html.escape(str(name))}</td>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.3f}"
    return html.escape(str(v))


def render_html(summary: dict[str, Any]) -> str:
    """A self-contained HTML page for a summary (no external files or scripts).

    Parameters
    ----------
    summary
        From :func:`build_summary`.

    Returns
    -------
    str
    """
    parts = [f"<h1>{html.escape(summary['name'])}</h1><p>{summary['rows']} rows</p>"]
    if "label_model" in summary:
        lm = summary["label_model"]
        parts.append(f"<p>label model: <b>{html.escape(lm['chosen'])}</b> — {html.escape(lm['reason'])}</p>")
    if "label_distribution" in summary:
        dist = summary["label_distribution"]
        parts.append("<h2>Label distribution</h2>" + _bars(dist, max(sum(dist.values()), 1)))
    if "gold" in summary:
        g = summary["gold"]
        parts.append(f"<h2>Against gold ({g['rows']} rows)</h2><p>accuracy {g['accuracy']:.3f}, F1 {g['f1']:.3f}, "
                     f"coverage {g['coverage']:.3f}</p>")
        classes = g["confusion"]["classes"]
        head = "".join(f"<th>pred {html.escape(c)}</th>" for c in classes)
        rows = "".join(f"<tr><th>gold {html.escape(c)}</th>" + "".join(f"<td>{v}</td>" for v in row) + "</tr>"
                       for c, row in zip(classes, g["confusion"]["matrix"], strict=True))
        parts.append(f"<table><tr><th></th>{head}</tr>{rows}</table>")
    if "sources" in summary:
        parts.append("<h2>Sources</h2>" + _table(summary["sources"]))
        coverage = {k: round(v["Coverage"], 3) for k, v in summary["sources"].items()}
        parts.append("<h3>Coverage</h3>" + _bars(coverage, 1.0))
    if "agreement" in summary:
        names = summary["agreement"]["sources"]
        rows = "".join(f"<tr><th>{html.escape(a)}</th>" + "".join(
            f"<td>{'' if v is None else f'{v:.2f}'}</td>" for v in row) + "</tr>"
            for a, row in zip(names, summary["agreement"]["matrix"], strict=True))
        head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
        parts.append(f"<h2>Agreement between sources</h2><table><tr><th></th>{head}</tr>{rows}</table>")
    for title, png in _plots(summary):
        parts.append(f"<h2>{html.escape(title)}</h2><img alt='{html.escape(title)}' src='data:image/png;base64,{png}'>")
    if summary.get("cache"):
        c = summary["cache"]
        parts.append(f"<p>response cache: {c['hits']} hits, {c['misses']} misses, {c['calls']} engine calls</p>")
    style = ("body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;margin:.5em 0}"
             "td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}td.bar{width:20em}"
             "td.bar div{background:#4878a8;height:10px}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(summary['name'])}</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n")


def write_report(summary: dict[str, Any], job_dir: Path, html_path: Path | None = None) -> tuple[Path, Path]:
    """Write summary.json and report.html into the job directory (and the HTML to ``html_path`` too)."""
    from orchestra.job import write_json_atomic

    write_json_atomic(job_dir / "summary.json", summary)
    page = render_html(summary)
    targets = [job_dir / "report.html"] + ([html_path] if html_path is not None else [])
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(page, encoding="utf-8")
        tmp.replace(target)
    return job_dir / "summary.json", job_dir / "report.html"


def report_from_dir(job_dir: str | Path) -> dict[str, Any]:
    """Rebuild summary.json and report.html of a finished job directory.

    Parameters
    ----------
    job_dir
        The job directory.

    Returns
    -------
    dict
        The summary.
    """
    job_dir = Path(job_dir)
    from orchestra.job import read_manifest

    manifest = read_manifest(job_dir)
    if manifest.get("state") != "done" or not (job_dir / "result.parquet").exists():
        raise OrchestraError(f"job {job_dir} has not finished; run it to the end (orchestra run ... --job-dir) first")
    meta = json.loads((job_dir / "meta.json").read_text(encoding="utf-8"))
    summary = build_summary(pd.read_parquet(job_dir / "result.parquet"), meta)
    write_report(summary, job_dir)
    return summary
