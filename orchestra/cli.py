"""The ``orchestra`` command line: label a vote table with a label model, or run the demo.

    orchestra label VOTES [--columns C ...] [--method auto] [--cardinality K] [--out OUT]
    orchestra demo

Exit codes: 0 success, 2 bad input, 1 runtime failure.
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from labelmodel import LabelModel, LabelModelError
from labelmodel.model.auto import METHODS

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


class InputError(Exception):
    """Bad input from the user: exit code 2."""


def read_table(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise InputError(f"{path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path)
        if suffix in (".jsonl", ".ndjson"):
            return pd.read_json(path, lines=True)
        if suffix in (".csv", ".tsv"):
            return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as err:
        raise InputError(f"cannot read {path}: {err}") from err
    raise InputError(f"{path}: unsupported format {suffix!r}; use .csv, .tsv, .jsonl or .parquet")


def write_atomic(df: pd.DataFrame, path: Path) -> None:
    """Write next to the target and rename, so an existing output is never half-overwritten."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        if path.suffix.lower() == ".parquet":
            df.to_parquet(tmp, index=False)
        elif path.suffix.lower() in (".jsonl", ".ndjson"):
            df.to_json(tmp, orient="records", lines=True)
        else:
            df.to_csv(tmp, index=False, sep="\t" if path.suffix.lower() == ".tsv" else ",")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cmd_label(args: argparse.Namespace) -> int:
    df = read_table(Path(args.votes))
    columns = args.columns or [c for c in df.columns if str(c).startswith(args.prefix)]
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError(f"columns {missing} are not in {args.votes}; it has {list(df.columns)}")
    if not columns:
        raise InputError(f"no vote columns: none starts with {args.prefix!r}; name them with --columns")
    model = LabelModel(method=args.method, cardinality=args.cardinality, seed=args.seed)
    model.fit(df[columns])
    preds, probs = model.predict(df[columns], return_probs=True)
    out = df.copy()
    out["label"] = preds
    for c in range(probs.shape[1]):
        out[f"proba_{c}"] = probs[:, c]
    target = Path(args.out) if args.out else Path(args.votes).with_suffix(".labeled" + Path(args.votes).suffix)
    write_atomic(out, target)
    counts = np.bincount(preds[preds >= 0], minlength=probs.shape[1])
    print(f"{len(df)} rows, {len(columns)} vote columns -> {target}")
    print(f"model: {model.chosen_} ({model.reason_})")
    print("label counts: " + ", ".join(f"{c}: {n}" for c, n in enumerate(counts)))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    script = EXAMPLES / "labelmodel_demo.py"
    if not script.exists():
        raise InputError(f"the demo needs the source checkout's examples/ folder ({script} is missing)")
    runpy.run_path(str(script), run_name="__main__")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orchestra", description="Many cheap LLM calls, one good label.")
    sub = parser.add_subparsers(dest="command", required=True)
    label = sub.add_parser("label", help="aggregate vote columns (class index, -1 = abstain) into labels")
    label.add_argument("votes", help="table of votes: .csv, .tsv, .jsonl or .parquet")
    label.add_argument("--columns", nargs="*", help="vote columns (default: those starting with --prefix)")
    label.add_argument("--prefix", default="vote_", help="prefix of vote columns when --columns is not given")
    label.add_argument("--method", default="auto", choices=METHODS)
    label.add_argument("--cardinality", type=int, help="number of classes (default: inferred)")
    label.add_argument("--seed", type=int, default=0)
    label.add_argument("--out", help="output table (default: VOTES with .labeled before the suffix)")
    label.set_defaults(func=cmd_label)
    demo = sub.add_parser("demo", help="label-model demo on the project's example reviews")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (InputError, LabelModelError) as err:
        print(f"orchestra: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - the CLI reports any runtime failure with exit code 1
        print(f"orchestra: failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
