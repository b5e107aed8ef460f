"""Readers and writers on real files: formats, line-numbered errors, atomic writes."""

import json

import pandas as pd
import pytest

from orchestra import OrchestraError, read_records, write_table

ROWS = [{"id": 1, "text": "good"}, {"id": 2, "text": "bad, really"}, {"id": 3, "text": "ünïcode"}]


@pytest.mark.parametrize("suffix", ["jsonl", "csv", "tsv", "parquet"])
def test_round_trip_every_format(tmp_path, suffix):
    path = tmp_path / f"data.{suffix}"
    write_table(pd.DataFrame(ROWS), path)
    frame = read_records(path, id="id", required=["text"])
    assert frame.to_dict(orient="records") == ROWS
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_non_utf8_bytes_are_reported_with_their_line(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes(b"id,text\n1,fine\n2,caf\xe9\n")
    with pytest.raises(OrchestraError, match=r"data.csv:3: .*not UTF-8"):
        read_records(path)


def test_ragged_rows_are_reported_with_their_line(tmp_path):
    path = tmp_path / "data.tsv"
    path.write_text("id\ttext\n1\tok\n2\tone\ttoo many\n")
    with pytest.raises(OrchestraError, match=r"data.tsv:3: 3 fields where the header has 2"):
        read_records(path)


def test_bad_json_line_is_reported(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n{not json}\n")
    with pytest.raises(OrchestraError, match=r"data.jsonl:2: not valid JSON"):
        read_records(path)


def test_duplicate_ids_missing_columns_and_empty_data(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [*ROWS, {"id": 2, "text": "again"}]))
    with pytest.raises(OrchestraError, match=r"ids in column 'id' repeat: 2 \(line 2\), 2 \(line 4\)"):
        read_records(path, id="id")
    with pytest.raises(OrchestraError, match=r"no column\(s\) \['gold'\]"):
        read_records(path, required=["gold"])
    empty = tmp_path / "empty.csv"
    empty.write_text("id,text\n")
    with pytest.raises(OrchestraError, match="no records"):
        read_records(empty)
    with pytest.raises(OrchestraError, match="does not exist"):
        read_records(tmp_path / "nope.csv")
    with pytest.raises(OrchestraError, match="cannot tell the format"):
        read_records(tmp_path / "data.xlsx")


def test_unreadable_parquet_is_bad_input(tmp_path):
    path = tmp_path / "data.parquet"
    path.write_bytes(b"this is not parquet")
    with pytest.raises(OrchestraError, match="cannot read"):
        read_records(path)


def test_failed_write_leaves_the_old_output_whole(tmp_path):
    path = tmp_path / "out.parquet"
    write_table(pd.DataFrame(ROWS), path)
    before = path.read_bytes()
    unwritable = pd.DataFrame({"x": [object(), object()]})
    with pytest.raises(Exception):  # noqa: B017 - whatever pyarrow raises, the old file must survive
        write_table(unwritable, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.parquet"]
