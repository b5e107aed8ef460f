"""The response cache on a real SQLite file, in front of a small deterministic scorer defined here."""

import sqlite3
from dataclasses import dataclass

import pytest

from engine.cache import KEY_VERSION, CachedEngine, ResponseCache, request_key
from engine.errors import EngineError


@dataclass
class Score:
    logprob: float
    mean_logprob: float
    num_tokens: int


@dataclass
class Completion:
    text: str


@dataclass
class Output:
    outputs: list


@dataclass
class Params:
    temperature: float = 0.0
    max_tokens: int = 4
    seed: int | None = 0


class CountingScorer:
    """Deterministic stand-in for an engine: scores by string lengths, generates by echoing; counts requests."""

    backend = "test"
    model = "length-scorer"

    def __init__(self):
        self.calls = 0
        self.prompts = 0

    def score(self, prompts, choices):
        self.calls += 1
        self.prompts += len(prompts)
        return [[Score(-float(len(p) + len(c)), -1.0 / (1 + len(c)), len(c)) for c in cs]
                for p, cs in zip(prompts, choices, strict=True)]

    def generate(self, prompts, params):
        self.calls += 1
        self.prompts += len(prompts)
        return [Output([Completion(f"{p[::-1]}|{params.seed}")]) for p in prompts]


PROMPTS = [f"review {i}: {'good ' * i}" for i in range(6)]
CHOICES = [[" negative", " positive"]] * len(PROMPTS)


def test_a_rerun_makes_zero_engine_calls_and_returns_the_same_scores(tmp_path):
    path = tmp_path / "cache.sqlite"
    scorer = CountingScorer()
    first = CachedEngine(scorer, path).score(PROMPTS, CHOICES)
    assert scorer.calls == 1 and scorer.prompts == len(PROMPTS)
    again = CachedEngine(scorer, ResponseCache(path))
    second = again.score(PROMPTS, CHOICES)
    assert scorer.calls == 1
    assert again.stats() == {"hits": len(PROMPTS), "misses": 0, "calls": 0, "tokens": 0}
    assert [[(s.logprob, s.mean_logprob, s.num_tokens) for s in row] for row in first] == \
        [[(s.logprob, s.mean_logprob, s.num_tokens) for s in row] for row in second]


def test_only_missing_requests_reach_the_engine(tmp_path):
    scorer = CountingScorer()
    cached = CachedEngine(scorer, tmp_path / "c.sqlite")
    cached.score(PROMPTS[:3], CHOICES[:3])
    cached.score(PROMPTS, CHOICES)
    assert scorer.prompts == len(PROMPTS)
    assert cached.stats() == {"hits": 3, "misses": 6, "calls": 2, "tokens": 6 * (9 + 9)}
    cached.score(PROMPTS[:2], [[" bad", " good"]] * 2)
    assert scorer.prompts == len(PROMPTS) + 2, "other choices are other requests"


def test_generation_is_keyed_by_sampling_params_including_the_seed(tmp_path):
    scorer = CountingScorer()
    cached = CachedEngine(scorer, tmp_path / "c.sqlite")
    out = cached.generate(PROMPTS, Params(seed=1))
    assert [o.outputs[0].text for o in out] == [f"{p[::-1]}|1" for p in PROMPTS]
    cached.generate(PROMPTS, Params(seed=1))
    assert scorer.calls == 1
    other = cached.generate(PROMPTS[:1], Params(seed=2))
    assert other[0].outputs[0].text.endswith("|2") and scorer.calls == 2
    cached.generate(PROMPTS[:1], Params(temperature=0.7, seed=None))
    cached.generate(PROMPTS[:1], Params(temperature=0.7, seed=None))
    assert scorer.calls == 4, "unseeded sampling is never answered from the cache"


def test_keys_separate_backends_and_models(tmp_path):
    a = request_key("local", "m1", "score", "p", {"choices": ["x"]})
    assert a != request_key("vllm", "m1", "score", "p", {"choices": ["x"]})
    assert a != request_key("local", "m2", "score", "p", {"choices": ["x"]})
    scorer = CountingScorer()
    CachedEngine(scorer, tmp_path / "c.sqlite", model="m1").score(PROMPTS, CHOICES)
    CachedEngine(scorer, tmp_path / "c.sqlite", model="m2").score(PROMPTS, CHOICES)
    assert scorer.calls == 2
    assert len(ResponseCache(tmp_path / "c.sqlite")) == 2 * len(PROMPTS)


def test_the_file_is_sqlite_in_wal_mode_and_a_corrupt_file_is_reported(tmp_path):
    path = tmp_path / "c.sqlite"
    CachedEngine(CountingScorer(), path).score(PROMPTS, CHOICES)
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"not a database" * 100)
    with pytest.raises(EngineError, match="delete it"):
        ResponseCache(bad)


def test_keys_are_the_engines_prompt_tokens(llm, tmp_path):
    """With the real engine, text and the same token ids are one request; different tokens are another."""
    cached = CachedEngine(llm, tmp_path / "c.sqlite", backend="local", model="smollm2-135m")
    prompt = "Review: boils fast and looks great\nSentiment:"
    ids = llm.tokenizer.encode(prompt)
    assert cached.key_prompt(prompt) == ids
    first = cached.score([prompt], [[" positive", " negative"]])
    assert cached.stats()["calls"] == 1
    assert cached.stats()["tokens"] == len(ids) + sum(s.num_tokens for s in first[0]), "prompt + choice tokens"
    by_ids = cached.score([ids], [[" positive", " negative"]])
    assert cached.stats()["calls"] == 1 and cached.hits == 1, "token ids hit the entry the text made"
    assert [s.logprob for s in by_ids[0]] == [s.logprob for s in first[0]]
    cached.score([prompt + " "], [[" positive", " negative"]])
    assert cached.stats()["calls"] == 2, "other tokens are another request"


def test_a_cache_with_text_keys_is_emptied_and_a_newer_one_refused(tmp_path):
    old = tmp_path / "old.sqlite"
    conn = sqlite3.connect(old)
    conn.execute("CREATE TABLE responses (key TEXT PRIMARY KEY, kind TEXT NOT NULL, value TEXT NOT NULL)")
    conn.execute("INSERT INTO responses VALUES ('abc', 'score', '[[-1.0, -1.0, 1]]')")
    conn.commit()
    conn.close()
    cache = ResponseCache(old)
    assert len(cache) == 0, "version-1 entries (prompt text keys) are dropped, never mixed with token keys"
    version = sqlite3.connect(old).execute("SELECT value FROM meta WHERE name = 'key_version'").fetchone()[0]
    assert version == str(KEY_VERSION) == "2"
    cache.put_many("score", [("k", [[-1.0, -1.0, 1]])])
    cache.close()
    assert len(ResponseCache(old)) == 1, "a current cache keeps its entries when reopened"
    conn = sqlite3.connect(old)
    conn.execute("UPDATE meta SET value = '99' WHERE name = 'key_version'")
    conn.commit()
    conn.close()
    with pytest.raises(EngineError, match="key version 99, newer"):
        ResponseCache(old)


def test_several_processes_share_one_cache_file(tmp_path):
    """Writers in other processes wait on the lock (busy timeout) instead of failing."""
    import subprocess
    import sys

    path = tmp_path / "shared.sqlite"
    ResponseCache(path).close()
    code = ("import sys; from engine.cache import ResponseCache; c = ResponseCache(sys.argv[1]); "
            "[c.put_many('score', [(f'{sys.argv[2]}-{i}', [i])]) for i in range(200)]")
    from .conftest import ROOT, cli_env

    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), str(n)], cwd=ROOT, env=cli_env(),
                              stderr=subprocess.PIPE) for n in range(3)]
    for proc in procs:
        assert proc.wait(timeout=120) == 0, proc.stderr.read()
    assert len(ResponseCache(path)) == 600
