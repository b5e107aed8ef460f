"""kill -9 an ``orchestra run`` at random points, resume, and compare the output byte for byte."""

import json
import os
import random
import signal
import subprocess
import time

from orchestra.cli import main

from .conftest import ROOT, cli_command, cli_env

SMS_LFS = '''
from labelmodel import ABSTAIN, labeling_function

HAM, SPAM = 0, 1


def keywords(name, words, label):
    @labeling_function(name=name)
    def lf(x):
        text = x.text.lower()
        return label if any(w in text for w in words) else ABSTAIN
    return lf


LFS = [
    keywords("free", ["free", "prize", "won", "winner", "claim"], SPAM),
    keywords("call_now", ["call now", "call 0", "txt", "text "], SPAM),
    keywords("money", ["cash", "£", "$", "urgent"], SPAM),
    keywords("links", ["http", "www", ".com"], SPAM),
    keywords("casual", ["i'll", "lol", "ok ", "haha", "u r"], HAM),
    keywords("home", ["home", "later", "tonight", "tomorrow"], HAM),
    keywords("feelings", ["love", "sorry", "miss you", "thanks"], HAM),
]
'''

PIPELINE = """\
name: sms
data: {path: sms.jsonl, id: id, gold: gold}
task: {labels: [ham, spam], input: "{text}"}
steps:
  - lfs: {module: sms_lfs.py, fields: [text]}
  - label_model: {method: auto}
output: {path: out/sms.parquet}
run: {chunk_size: 50, seed: 3}
"""


def make_project(folder, records):
    folder.mkdir()
    (folder / "sms_lfs.py").write_text(SMS_LFS)
    (folder / "pipeline.yaml").write_text(PIPELINE)
    with open(folder / "sms.jsonl", "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return folder / "pipeline.yaml"


def committed(job):
    try:
        return len(json.loads((job / "manifest.json").read_text())["done"])
    except (OSError, ValueError, KeyError):
        return 0


def run_and_kill(yaml_path, job, after_chunks=None, after_seconds=None):
    """Start a run; SIGKILL it once ``after_chunks`` chunks are committed or ``after_seconds`` passed."""
    proc = subprocess.Popen(cli_command("run", str(yaml_path), "--job-dir", str(job)), cwd=ROOT, env=cli_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    start = time.monotonic()
    while proc.poll() is None and time.monotonic() - start < 120:
        if after_chunks is not None and committed(job) >= after_chunks:
            break
        if after_seconds is not None and time.monotonic() - start >= after_seconds:
            break
        time.sleep(0.002)
    killed_mid_job = proc.poll() is None
    if killed_mid_job:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return killed_mid_job


def test_kill_9_then_resume_gives_byte_identical_output(shared_data, tmp_path, capsys):
    raw = json.loads((shared_data / "wrench" / "sms" / "train.json").read_text())
    records = [{"id": int(k), "text": v["data"]["text"], "gold": v["label"]} for k, v in raw.items()]
    straight = make_project(tmp_path / "straight", records)
    done = subprocess.run(cli_command("run", str(straight), "--job-dir", str(tmp_path / "straight_job")), cwd=ROOT,
                          env=cli_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    expected = (tmp_path / "straight" / "out" / "sms.parquet").read_bytes()

    killed = make_project(tmp_path / "killed", records)
    job = tmp_path / "killed_job"
    n_chunks = -(-len(records) // 50)
    rng = random.Random(20261129)
    targets = sorted(rng.sample(range(1, n_chunks - 1), 3))
    mid_job = [run_and_kill(killed, job, after_seconds=rng.uniform(0.5, 2.5))]
    mid_job += [run_and_kill(killed, job, after_chunks=t) for t in targets]
    assert sum(mid_job) >= 2, "the runs should have been killed while the job was going"
    assert 0 < committed(job) < n_chunks
    assert main(["status", str(job)]) == 0
    assert "interrupted" in capsys.readouterr().out
    resumed = subprocess.run(cli_command("run", str(killed), "--job-dir", str(job)), cwd=ROOT, env=cli_env(),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed" in resumed.stdout and " 0 resumed" not in resumed.stdout
    assert (tmp_path / "killed" / "out" / "sms.parquet").read_bytes() == expected
    assert len(list((job / "shards").glob("*.parquet"))) == n_chunks


def test_kills_of_a_rerun_never_leave_a_half_written_output(shared_data, tmp_path):
    raw = json.loads((shared_data / "wrench" / "sms" / "valid.json").read_text())
    records = [{"id": int(k), "text": v["data"]["text"], "gold": v["label"]} for k, v in raw.items()]
    project = make_project(tmp_path / "p", records)
    job = tmp_path / "job"
    assert subprocess.run(cli_command("run", str(project), "--job-dir", str(job)), cwd=ROOT, env=cli_env(),
                          capture_output=True, timeout=300).returncode == 0
    output = tmp_path / "p" / "out" / "sms.parquet"
    expected = output.read_bytes()
    rng = random.Random(7)
    for _ in range(2):
        run_and_kill(project, job, after_seconds=rng.uniform(1.5, 3.5))
        assert output.read_bytes() == expected, "an existing output is never half-overwritten"
