"""A persistent response cache for LLM requests, and a wrapper that puts any engine-like object behind it.

Entries live in one SQLite file (WAL mode, so readers never block the writer and a killed process loses at
most its open transaction; a busy timeout lets several processes share the file). A request is keyed by the
SHA-256 of (key version, backend, model, request kind, prompt tokens, parameters), where the prompt tokens are
the engine's own token ids (``engine.tokenizer.encode``; the prompt text only for engines without a
tokenizer, e.g. remote backends) and the parameters are the scored choices or every field of the sampling
parameters, seed included. Sampled requests without a seed (``temperature > 0`` and ``seed=None``) are not
cached: a re-run should draw a new sample.

The key version is stored in the file (table ``meta``). Opening a cache written with older keys (version 1
keyed prompts by their text) deletes those entries, which can never be hit again, and logs how many; a cache
from a newer version is refused rather than mixed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import EngineError

logger = logging.getLogger(__name__)

SCHEMA = """CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    value TEXT NOT NULL
)"""
META = "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)"
KEY_VERSION = 2  # 1: prompt text; 2: prompt token ids where the engine has a tokenizer
BUSY_TIMEOUT_S = 60.0


def params_dict(params: Any) -> dict[str, Any]:
    """The fields of a sampling-parameters object as a plain dict (dataclass, msgspec, pydantic or plain)."""
    if params is None:
        return {}
    if isinstance(params, dict):
        return dict(params)
    if dataclasses.is_dataclass(params):
        return dataclasses.asdict(params)
    if hasattr(params, "__struct_fields__"):
        return {name: getattr(params, name) for name in params.__struct_fields__}
    if hasattr(params, "model_dump"):
        return params.model_dump()
    if hasattr(params, "__dict__"):
        return {k: v for k, v in vars(params).items() if not k.startswith("_")}
    raise EngineError(f"cannot read the fields of {type(params).__name__}; pass a dataclass or a dict")


def request_key(backend: str, model: str, kind: str, prompt: str | Sequence[int], params: dict[str, Any]) -> str:
    """SHA-256 key of one request.

    Parameters
    ----------
    backend, model
        Which engine answers.
    kind
        ``"score"`` or ``"generate"``.
    prompt
        The prompt's token ids, or its text for engines without a tokenizer (the two never collide).
    params
        Choices or sampling parameters.

    Returns
    -------
    str
        64 hex digits.
    """
    if isinstance(prompt, str):
        part: dict[str, Any] = {"text": prompt}
    else:
        part = {"tokens": [int(t) for t in prompt]}
    blob = json.dumps([KEY_VERSION, backend, model, kind, part, params], sort_keys=True, default=repr,
                      ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def find_tokenizer(engine: Any) -> Any:
    """The engine's tokenizer (an object with ``encode(text) -> list[int]``), or None (remote backends)."""
    tokenizer = getattr(engine, "tokenizer", None)
    return tokenizer if callable(getattr(tokenizer, "encode", None)) else None


class ResponseCache:
    """SQLite-backed key -> JSON value store.

    Parameters
    ----------
    path
        The SQLite file (created with its folder if missing).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                         timeout=BUSY_TIMEOUT_S)
            self._conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute(SCHEMA)
            self._conn.execute(META)
            self._check_version()
        except sqlite3.DatabaseError as err:
            raise EngineError(f"cannot open the response cache {self.path}: {err}; delete it to start afresh") from err
        self._lock = threading.Lock()

    def _check_version(self) -> None:
        """Drop entries keyed by an older key version; refuse a file from a newer one."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            row = self._conn.execute("SELECT value FROM meta WHERE name = 'key_version'").fetchone()
            found = int(row[0]) if row is not None else None
            if found is not None and found > KEY_VERSION:
                raise EngineError(
                    f"the response cache {self.path} uses key version {found}, newer than this code's {KEY_VERSION}; "
                    "upgrade, or point the cache elsewhere (engine.cache in the YAML)"
                )
            if found != KEY_VERSION:
                stale = int(self._conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0])
                if stale:
                    logger.warning("response cache %s: dropping %d entries keyed by version %s (prompt text); "
                                   "version %d keys prompts by token ids", self.path, stale, found or 1, KEY_VERSION)
                    self._conn.execute("DELETE FROM responses")
                self._conn.execute("INSERT OR REPLACE INTO meta (name, value) VALUES ('key_version', ?)",
                                   (str(KEY_VERSION),))
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise

    def get_many(self, keys: Sequence[str]) -> dict[str, Any]:
        """Values of the keys present, decoded from JSON."""
        found: dict[str, Any] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                part = list(keys[start:start + 500])
                marks = ",".join("?" * len(part))
                rows = self._conn.execute(f"SELECT key, value FROM responses WHERE key IN ({marks})", part)
                found.update((k, json.loads(v)) for k, v in rows)
        return found

    def put_many(self, kind: str, items: Iterable[tuple[str, Any]]) -> None:
        """Store values (JSON-able) under keys in one transaction."""
        rows = [(k, kind, json.dumps(v, ensure_ascii=False)) for k, v in items]
        with self._lock:
            self._conn.execute("BEGIN")
            self._conn.executemany("INSERT OR REPLACE INTO responses (key, kind, value) VALUES (?, ?, ?)", rows)
            self._conn.execute("COMMIT")

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._conn.close()


@dataclass(frozen=True)
class CachedChoiceScore:
    """A choice's score as the cache returns it (same fields as the engine's ChoiceScore)."""

    logprob: float
    mean_logprob: float
    num_tokens: int


@dataclass
class CachedCompletion:
    """One completion as the cache returns it (the fields of vLLM's CompletionOutput the cache keeps)."""

    text: str
    token_ids: list[int] = field(default_factory=list)
    cumulative_logprob: float | None = None
    finish_reason: str | None = None
    index: int = 0


@dataclass
class CachedRequestOutput:
    """A generation result as the cache returns it (``.prompt``, ``.outputs[i].text``)."""

    prompt: str
    outputs: list[CachedCompletion]


def _score_value(scores: Any) -> list[list[float]]:
    """Accepts engine.LLM's ScoreOutput (choices under ``.choices``) or a plain list of choice scores."""
    return [[float(s.logprob), float(s.mean_logprob), int(s.num_tokens)] for s in getattr(scores, "choices", scores)]


def _generate_value(output: Any) -> list[dict[str, Any]]:
    return [{"text": o.text, "token_ids": [int(t) for t in (getattr(o, "token_ids", None) or [])],
             "cumulative_logprob": getattr(o, "cumulative_logprob", None),
             "finish_reason": getattr(o, "finish_reason", None), "index": int(getattr(o, "index", i))}
            for i, o in enumerate(output.outputs)]


class CachedEngine:
    """Put an engine-like object (``score`` and / or ``generate``) behind a :class:`ResponseCache`.

    Only requests missing from the cache reach the engine, in one call per batch.

    Parameters
    ----------
    engine
        The engine.
    cache
        A :class:`ResponseCache`, the path of its SQLite file, or any store with the same ``get_many`` /
        ``put_many`` methods (the Ray executor's actors share one through a cache actor).
    backend, model
        Key parts; default to the engine's ``backend`` / ``model`` attributes, else its class name.
    tokenizer
        Turns prompt text into the token ids the key holds; default: the engine's ``tokenizer`` if it has
        an ``encode`` method, else prompts are keyed by their text.

    Attributes
    ----------
    hits, misses
        Requests answered from the cache / by the engine.
    calls
        Calls made to the engine.
    tokens
        Tokens the engine processed for this wrapper: prompt tokens (where there is a tokenizer), scored choice
        tokens and generated tokens (cache hits count none).
    """

    def __init__(self, engine: Any, cache: ResponseCache | str | Path | Any, backend: str | None = None,
                 model: str | None = None, tokenizer: Any = None) -> None:
        self.engine = engine
        self.cache = ResponseCache(cache) if isinstance(cache, (str, Path)) else cache
        self.tokenizer = tokenizer if tokenizer is not None else find_tokenizer(engine)
        self.backend = backend or str(getattr(engine, "backend", type(engine).__name__))
        self.model = model or str(getattr(engine, "model", getattr(engine, "model_name", "")))
        self.hits = 0
        self.misses = 0
        self.calls = 0
        self.tokens = 0

    def key_prompt(self, prompt: str | Sequence[int]) -> str | list[int]:
        """What a prompt contributes to its key: its token ids when there is a tokenizer, else its text."""
        if isinstance(prompt, str) and self.tokenizer is not None:
            return list(self.tokenizer.encode(prompt))
        return prompt if isinstance(prompt, str) else [int(t) for t in prompt]

    def score(self, prompts: Sequence[str], choices: Sequence[Sequence[str]]) -> list[list[CachedChoiceScore]]:
        """``engine.score`` with caching; same arguments and result shape."""
        if len(prompts) != len(choices):
            raise EngineError(f"score got {len(prompts)} prompts and {len(choices)} choice lists; give one per prompt")
        keyed = [self.key_prompt(p) for p in prompts]
        prompt_tokens = [len(k) if isinstance(k, list) else 0 for k in keyed]
        keys = [request_key(self.backend, self.model, "score", k, {"choices": list(c)})
                for k, c in zip(keyed, choices, strict=True)]
        found = self.cache.get_many(keys)
        todo = [i for i, k in enumerate(keys) if k not in found]
        if todo:
            self.calls += 1
            fresh = self.engine.score([prompts[i] for i in todo], [list(choices[i]) for i in todo])
            values = [_score_value(s) for s in fresh]
            self.tokens += sum(int(c[2]) for row in values for c in row) + sum(prompt_tokens[i] for i in todo)
            self.cache.put_many("score", [(keys[i], v) for i, v in zip(todo, values, strict=True)])
            found.update((keys[i], v) for i, v in zip(todo, values, strict=True))
        self.hits += len(keys) - len(todo)
        self.misses += len(todo)
        return [[CachedChoiceScore(a, b, int(c)) for a, b, c in found[k]] for k in keys]

    def generate(self, prompts: Sequence[str], sampling_params: Any = None) -> list[Any]:
        """``engine.generate`` with caching; returns :class:`CachedRequestOutput` objects."""
        params = params_dict(sampling_params)
        if params.get("temperature", 0) and params.get("seed") is None:
            self.calls += 1
            self.misses += len(prompts)
            fresh = list(self.engine.generate(list(prompts), sampling_params))
            self.tokens += sum(len(o["token_ids"]) for out in fresh for o in _generate_value(out))
            return fresh
        keyed = [self.key_prompt(p) for p in prompts]
        keys = [request_key(self.backend, self.model, "generate", k, params) for k in keyed]
        found = self.cache.get_many(keys)
        todo = [i for i, k in enumerate(keys) if k not in found]
        if todo:
            self.calls += 1
            fresh = self.engine.generate([prompts[i] for i in todo], sampling_params)
            values = [_generate_value(o) for o in fresh]
            self.tokens += sum(len(o["token_ids"]) for v in values for o in v)
            self.tokens += sum(len(keyed[i]) for i in todo if isinstance(keyed[i], list))
            self.cache.put_many("generate", [(keys[i], v) for i, v in zip(todo, values, strict=True)])
            found.update((keys[i], v) for i, v in zip(todo, values, strict=True))
        self.hits += len(keys) - len(todo)
        self.misses += len(todo)
        return [CachedRequestOutput(p, [CachedCompletion(**o) for o in found[k]]) for p, k in zip(prompts, keys,
                                                                                                    strict=True)]

    def stats(self) -> dict[str, int]:
        """Hits, misses, engine calls and engine tokens so far."""
        return {"hits": self.hits, "misses": self.misses, "calls": self.calls, "tokens": self.tokens}
