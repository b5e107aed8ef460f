"""Readers and writers: JSONL, CSV/TSV, Parquet and DataFrames, with errors that name the line.

Outputs are written to a temporary file beside the target and renamed over it, so an existing output is
never half-overwritten.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from orchestra.errors import OrchestraError

logger = logging.getLogger(__name__)

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv",
           ".parquet": "parquet", ".pq": "parquet"}


def detect_format(path: Path, fmt: str | None = None) -> str:
    """The table format of ``path``: ``fmt`` if given, else from the suffix.

    Parameters
    ----------
    path
        The file.
    fmt
        ``"jsonl"``, ``"csv"``, ``"tsv"`` or ``"parquet"``, or None to use the suffix.

    Returns
    -------
    str
    """
    if fmt is not None:
        if fmt not in set(FORMATS.values()):
            raise OrchestraError(f"format must be one of {sorted(set(FORMATS.values()))}, got {fmt!r}")
        return fmt
    found = FORMATS.get(path.suffix.lower())
    if found is None:
        raise OrchestraError(
            f"{path}: cannot tell the format from the suffix {path.suffix!r}; use .jsonl, .csv, .tsv or .parquet, "
            "or set format:"
        )
    return found


def _decode_lines(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        for number, line in enumerate(raw.split(b"\n"), start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as err:
                bad = line[err.start:err.end]
                raise OrchestraError(
                    f"{path}:{number}: bytes {bad!r} at column {err.start + 1} are not UTF-8; re-encode the file "
                    "as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
                ) from None
        raise


def _read_jsonl(path: Path, text: str) -> pd.DataFrame:
    records = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise OrchestraError(
                f"{path}:{number}: not valid JSON ({err.msg} at column {err.colno}); write one JSON object per line"
            ) from None
        if not isinstance(record, dict):
            raise OrchestraError(f"{path}:{number}: a JSON {type(record).__name__}, expected an object {{...}}")
        records.append(record)
    return pd.DataFrame.from_records(records)


def _read_delimited(path: Path, text: str, sep: str) -> pd.DataFrame:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
    header: list[str] | None = None
    for row in reader:
        if header is None:
            header = row
            if len(set(header)) != len(header):
                repeated = sorted({h for h in header if header.count(h) > 1})
                raise OrchestraError(f"{path}:1: the header repeats columns {repeated}; give each column once")
            continue
        if not row:
            continue
        if len(row) != len(header):
            raise OrchestraError(
                f"{path}:{reader.line_num}: {len(row)} fields where the header has {len(header)}; quote fields "
                f"that contain {sep!r} or fix the row"
            )
    if header is None:
        return pd.DataFrame()
    return pd.read_csv(io.StringIO(text), sep=sep)


def read_records(
    path: str | Path,
    fmt: str | None = None,
    id: str | None = None,
    required: Sequence[str] = (),
) -> pd.DataFrame:
    """Read a table of records and check it.

    Parameters
    ----------
    path
        A .jsonl, .csv, .tsv or .parquet file.
    fmt
        Format, when the suffix does not tell it.
    id
        Column holding a unique id per record (checked for presence and duplicates).
    required
        Columns that must be present.

    Returns
    -------
    pandas.DataFrame
        The records, with a fresh RangeIndex.
    """
    path = Path(path)
    kind = detect_format(path, fmt)
    if not path.exists():
        raise OrchestraError(f"data file {path} does not exist; check the path (relative paths start at the YAML)")
    if not path.is_file():
        raise OrchestraError(f"{path} is not a file")
    try:
        if kind == "parquet":
            frame = pd.read_parquet(path)
        else:
            text = _decode_lines(path, path.read_bytes())
            frame = _read_jsonl(path, text) if kind == "jsonl" else _read_delimited(
                path, text, "\t" if kind == "tsv" else ",")
    except OrchestraError:
        raise
    except PermissionError as err:
        raise OrchestraError(f"cannot read {path}: permission denied; make it readable") from err
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise OrchestraError(f"cannot read {path} as {kind}: {err}") from err
    return check_records(frame.reset_index(drop=True), str(path), id=id, required=required, first_line=2
                         if kind in ("csv", "tsv") else 1)


def check_records(
    frame: pd.DataFrame, source: str, id: str | None = None, required: Sequence[str] = (), first_line: int = 1,
) -> pd.DataFrame:
    """Check a table: not empty, required columns present, ids unique.

    Parameters
    ----------
    frame
        The records.
    source
        Where they came from (for messages).
    id
        Id column, or None.
    required
        Columns that must be present.
    first_line
        Line number of the first record in the file (for duplicate-id messages).

    Returns
    -------
    pandas.DataFrame
        ``frame`` unchanged.
    """
    if len(frame) == 0:
        raise OrchestraError(f"{source} has no records; give a file with at least one row")
    wanted = ([id] if id else []) + [c for c in required if c != id]
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise OrchestraError(
            f"{source} has no column(s) {missing}; its columns are {list(frame.columns)}; fix the column names "
            "in the YAML (data.id, data.gold, task.input) or in the file"
        )
    if id:
        if frame[id].isna().any():
            row = int(frame[id].isna().to_numpy().argmax())
            raise OrchestraError(f"{source}: record at line {row + first_line} has no {id!r}; every record needs one")
        dup = frame[id].duplicated(keep=False)
        if dup.any():
            positions = list(dup.to_numpy().nonzero()[0][:6])
            values = frame[id].tolist()
            shown = ", ".join(f"{values[p]!r} (line {p + first_line})" for p in positions)
            raise OrchestraError(f"{source}: ids in column {id!r} repeat: {shown}; ids must be unique")
    return frame


def remove_stale_temps(path: Path) -> None:
    """Delete temp files a killed writer of ``path`` left behind (``.NAME.*.tmp`` beside it)."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)


def write_table(frame: pd.DataFrame, path: str | Path, fmt: str | None = None) -> Path:
    """Write a table atomically: to a temporary file beside ``path``, then renamed over it.

    Parameters
    ----------
    frame
        The table.
    path
        Target file; its suffix picks the format unless ``fmt`` is given.
    fmt
        ``"jsonl"``, ``"csv"``, ``"tsv"`` or ``"parquet"``.

    Returns
    -------
    pathlib.Path
        The written path.
    """
    path = Path(path)
    kind = detect_format(path, fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        if kind == "parquet":
            frame.to_parquet(tmp, index=False)
        elif kind == "jsonl":
            frame.to_json(tmp, orient="records", lines=True, force_ascii=False)
        else:
            frame.to_csv(tmp, index=False, sep="\t" if kind == "tsv" else ",")
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    logger.info("wrote %d rows to %s", len(frame), path)
    return path
