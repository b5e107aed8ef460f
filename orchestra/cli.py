"""The ``orchestra`` command line.

    orchestra run FILE [--set key.path=value ...] [--job-dir DIR] [--limit N] [--executor local|ray]
                  [--address ADDR] [--num-actors N]
    orchestra validate FILE [--set key.path=value ...]
    orchestra status DIR
    orchestra report DIR
    orchestra label VOTES [--columns C ...] [--method auto] [--cardinality K] [--out OUT]
    orchestra demo

Exit codes: 0 success, 2 bad input (nothing written), 1 runtime failure.
"""

from __future__ import annotations

import argparse
import logging
import os
import runpy
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from orchestra.errors import OrchestraError
from orchestra.io import read_records, write_table

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
LOG_EVERY_S = 5.0


def cmd_label(args: argparse.Namespace) -> int:
    import numpy as np

    from labelmodel import LabelModel

    df = read_records(args.votes)
    columns = args.columns or [c for c in df.columns if str(c).startswith(args.prefix)]
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise OrchestraError(f"columns {missing} are not in {args.votes}; it has {list(df.columns)}")
    if not columns:
        raise OrchestraError(f"no vote columns: none starts with {args.prefix!r}; name them with --columns")
    model = LabelModel(method=args.method, cardinality=args.cardinality, seed=args.seed)
    model.fit(df[columns])
    preds, probs = model.predict(df[columns], return_probs=True)
    out = df.copy()
    out["label"] = preds
    for c in range(probs.shape[1]):
        out[f"proba_{c}"] = probs[:, c]
    target = Path(args.out) if args.out else Path(args.votes).with_suffix(".labeled" + Path(args.votes).suffix)
    write_table(out, target)
    counts = np.bincount(preds[preds >= 0], minlength=probs.shape[1])
    print(f"{len(df)} rows, {len(columns)} vote columns -> {target}")
    print(f"model: {model.chosen_} ({model.reason_})")
    print("label counts: " + ", ".join(f"{c}: {n}" for c, n in enumerate(counts)))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    script = EXAMPLES / "labelmodel_demo.py"
    if not script.exists():
        raise OrchestraError(f"the demo needs the source checkout's examples/ folder ({script} is missing)")
    runpy.run_path(str(script), run_name="__main__")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from orchestra.build import prepare_raw
    from orchestra.config import read_yaml

    prepared, issues = prepare_raw(read_yaml(args.file, args.set or []))
    if issues or prepared is None:
        for issue in issues:
            print(issue.format(args.file), file=sys.stderr)
        print(f"orchestra: {len(issues)} problem(s) in {args.file}", file=sys.stderr)
        return 2
    steps = ", ".join(f"{s.name} ({s.step_type})" for s in prepared.pipeline.steps)
    print(f"{args.file}: OK — {len(prepared.frame)} records, steps: {steps}")
    return 0


def terminal_width() -> dict[str, Any]:
    """tqdm size options: follow the terminal, or COLUMNS / LINES (else 80 x 24) where it reports a size of 0 (a
    fresh pty, some CI runners), in which case tqdm would draw nothing."""
    try:
        if os.get_terminal_size(sys.stderr.fileno()).columns > 0:
            return {"dynamic_ncols": True}
    except (OSError, ValueError):
        pass
    size = shutil.get_terminal_size()
    return {"ncols": size.columns, "nrows": size.lines}


class Progress:
    """A tqdm bar on a terminal, a log line every few seconds otherwise."""

    def __init__(self, name: str, engine: Any = None) -> None:
        self.name = name
        self.engine = engine if hasattr(engine, "hits") else None
        self.bar: Any = None
        self.tty = sys.stderr.isatty()
        self.start = time.monotonic()
        self.first: int | None = None
        self.last_log = 0.0

    def __call__(self, done: int, total: int) -> None:
        if self.first is None:
            self.first = done
        if self.tty:
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=total, initial=done, unit="rows", desc=self.name, **terminal_width())
            else:
                self.bar.update(done - self.bar.n)
            if self.engine is not None:
                self.bar.set_postfix_str(f"{self.tokens_per_s():.0f} tokens/s, {self.engine.hits} cache hits")
            return
        now = time.monotonic()
        if now - self.last_log >= LOG_EVERY_S or done == total:
            self.last_log = now
            rate = (done - self.first) / max(now - self.start, 1e-9)
            eta = f", ETA {(total - done) / rate:.0f}s" if rate > 0 and done < total else ""
            tokens = f", {self.tokens_per_s():.3g} tokens/s" if self.engine is not None else ""
            print(f"orchestra: {self.name}: {done}/{total} rows ({100 * done / total:.0f}%), {rate:.3g} rows/s"
                  f"{tokens}{eta}", file=sys.stderr, flush=True)

    def bind(self, engine: Any, name: str | None = None) -> None:
        """Read tokens and cache hits from ``engine`` (a CachedEngine or the Ray executor's totals)."""
        self.engine = engine if hasattr(engine, "hits") else None
        self.name = name or self.name

    def tokens_per_s(self) -> float:
        return self.engine.tokens / max(time.monotonic() - self.start, 1e-9)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def cmd_run(args: argparse.Namespace) -> int:
    from orchestra.runner import run_file

    progress = Progress("orchestra")
    try:
        result = run_file(args.file, args.set or [], job_dir=args.job_dir, executor=args.executor,
                          address=args.address, num_actors=args.num_actors, limit=args.limit, progress=progress)
    finally:
        progress.close()
    summary = result.summary
    print(f"{summary['rows']} rows -> {result.output}  (job {result.job_dir}: {result.chunks_run} chunks run, "
          f"{result.chunks_resumed} resumed, executor {args.executor})")
    print_summary(summary)
    if result.cache:
        s = result.cache
        stored = f"; {s['entries']} responses stored" if "entries" in s else ""
        print(f"cache: {s['hits']} hits, {s['misses']} misses, {s['calls']} engine calls{stored}")
    else:
        print("cache: no model calls (no step uses a model)")
    return 0


def print_summary(summary: dict[str, Any]) -> None:
    """Print the headline figures of a job summary."""
    if "label_model" in summary:
        lm = summary["label_model"]
        print(f"label model: {lm['chosen']} ({lm['reason']})")
    if "label_distribution" in summary:
        print("labels: " + ", ".join(f"{k}: {v}" for k, v in summary["label_distribution"].items()))
    if "gold" in summary:
        g = summary["gold"]
        print(f"against gold ({g['rows']} rows): accuracy {g['accuracy']:.3f}, F1 {g['f1']:.3f}")


def cmd_status(args: argparse.Namespace) -> int:
    from orchestra.job import is_running, read_manifest

    m = read_manifest(args.dir)
    done = len(m["done"])
    rows = sum(e["rows"] for e in m["done"].values())
    state = m["state"]
    if state != "done":
        state = "running" if is_running(args.dir) else "interrupted (run the same command again to resume)"
    print(f"job {m['name']} in {args.dir}: {state}")
    print(f"chunks: {done}/{m['chunks']} committed ({rows}/{m['rows']} rows, {m['chunk_size']} per chunk)")
    print(f"fingerprint: {m['fingerprint'][:16]}")
    if m.get("output"):
        print(f"output: {m['output']}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from orchestra.report import report_from_dir

    summary = report_from_dir(args.dir)
    print(f"job {summary['name']}: {summary['rows']} rows")
    print_summary(summary)
    print(f"wrote {Path(args.dir) / 'summary.json'} and {Path(args.dir) / 'report.html'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orchestra", description="Many cheap LLM calls, one good label.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a YAML pipeline as a resumable batch job")
    run.add_argument("file", help="pipeline .yaml")
    run.add_argument("--set", action="append", metavar="KEY.PATH=VALUE", help="override a YAML value (repeatable)")
    run.add_argument("--job-dir", help="job directory (default: OUTPUT.job beside the output)")
    run.add_argument("--limit", type=int, help="process only the first N records")
    run.add_argument("--executor", choices=["local", "ray"], default="local",
                     help="where chunks run: this process, or Ray actors with one engine each")
    run.add_argument("--address", help="Ray cluster address (with --executor ray; default: start a local one)")
    run.add_argument("--num-actors", type=int, help="Ray actors, one engine each (default: one per 4 CPUs of a node)")
    run.set_defaults(func=cmd_run)
    validate = sub.add_parser("validate", help="check a YAML pipeline and its data without loading any model")
    validate.add_argument("file")
    validate.add_argument("--set", action="append", metavar="KEY.PATH=VALUE")
    validate.set_defaults(func=cmd_validate)
    status = sub.add_parser("status", help="progress of a job directory")
    status.add_argument("dir")
    status.set_defaults(func=cmd_status)
    report = sub.add_parser("report", help="rebuild summary.json and report.html of a finished job")
    report.add_argument("dir")
    report.set_defaults(func=cmd_report)
    label = sub.add_parser("label", help="aggregate vote columns (class index, -1 = abstain) into labels")
    label.add_argument("votes", help="table of votes: .csv, .tsv, .jsonl or .parquet")
    label.add_argument("--columns", nargs="*", help="vote columns (default: those starting with --prefix)")
    label.add_argument("--prefix", default="vote_", help="prefix of vote columns when --columns is not given")
    label.add_argument("--method", default="auto", help="label model: auto, majority, triplet, dawid_skene, ...")
    label.add_argument("--cardinality", type=int, help="number of classes (default: inferred)")
    label.add_argument("--seed", type=int, default=0)
    label.add_argument("--out", help="output table (default: VOTES with .labeled before the suffix)")
    label.set_defaults(func=cmd_label)
    demo = sub.add_parser("demo", help="label-model demo on the project's example reviews")
    demo.set_defaults(func=cmd_demo)
    return parser


def is_input_error(err: BaseException) -> bool:
    """Whether an exception is bad input (exit 2) rather than a runtime failure (exit 1)."""
    if isinstance(err, OrchestraError):
        return True
    for module, name in (("labelmodel.errors", "LabelModelError"), ("engine.errors", "EngineError")):
        loaded = sys.modules.get(module)
        if loaded is not None and isinstance(err, getattr(loaded, name)):
            return True
    return False


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="orchestra: %(levelname)s: %(name)s: %(message)s")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("orchestra: interrupted; committed chunks are kept: run the same command again to resume",
              file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the CLI reports any failure with an exit code
        if is_input_error(err):
            print(f"orchestra: error: {err}", file=sys.stderr)
            return 2
        print(f"orchestra: failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
