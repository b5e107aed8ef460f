"""Labeling functions: small programs that vote a class index or abstain on one record.

A labeling function (LF) takes one record — a pandas row, a namedtuple, a dict or any object with attributes —
and returns a class index ``0..k-1`` or :data:`ABSTAIN` (``-1``). The API follows Snorkel's ``labeling.lf``::

    @labeling_function(resources={"words": {"subscribe", "check out"}})
    def lf_spam_words(x, words):
        return 1 if any(w in x.text.lower() for w in words) else ABSTAIN
"""

from __future__ import annotations

import copy
import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from labelmodel.errors import LabelModelError

ABSTAIN = -1
"""The vote of a labeling function that does not label a record."""

Preprocessor = Callable[[Any], Any]


class Record(dict):
    """A dict record whose fields can also be read and written as attributes (``x.text``).

    Item access (``x["text"]``) always works; attribute access is a convenience for fields whose names are
    valid identifiers and do not shadow a dict method (``items``, ``get``, ...).
    """

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(
                f"record has no field {name!r}; its fields are {sorted(map(str, self))}"
            ) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __copy__(self) -> Record:
        return Record(self)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Record, (dict(self),))


def as_record(x: Any) -> Any:
    """Return ``x`` with attribute access: a mapping becomes a :class:`Record`, anything else is kept."""
    if isinstance(x, Mapping) and not isinstance(x, Record):
        return Record(x)
    return x


def check_vote(lf_name: str, value: Any, where: str = "") -> int:
    """Validate one LF output and return it as a Python int.

    Parameters
    ----------
    lf_name
        Name of the LF that produced ``value`` (for the error message).
    value
        The LF output.
    where
        Optional location, e.g. ``" on row 12"``, appended to the message.

    Returns
    -------
    int
        ``value`` as an int ``>= -1``.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise LabelModelError(
            f"labeling function {lf_name!r} returned {value!r} ({type(value).__name__}){where}; "
            f"an LF must return an int class index 0..k-1 or ABSTAIN (-1)"
        )
    value = int(value)
    if value < ABSTAIN:
        raise LabelModelError(
            f"labeling function {lf_name!r} returned {value}{where}; labels must be class indices 0..k-1 "
            f"or ABSTAIN (-1)"
        )
    return value


def _resolve_global(module: str, qualname: str) -> Any:
    obj: Any = sys.modules.get(module) or importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


class LabelingFunction:
    """A named function that labels one record with a class index or abstains.

    Parameters
    ----------
    name
        Unique name of the LF (it names the LF's column in the label matrix).
    f
        The LF logic: ``f(x, **resources) -> int``.
    resources
        Keyword arguments passed to ``f`` on every call (word lists, lookup tables, models).
    pre
        Preprocessors ``record -> record`` run in order before ``f``. Each receives a shallow copy of the
        record, so it may set fields on it without affecting other LFs.
    """

    def __init__(
        self,
        name: str,
        f: Callable[..., Any],
        resources: Mapping[str, Any] | None = None,
        pre: Sequence[Preprocessor] | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise LabelModelError(f"LF name must be a non-empty string, got {name!r}; pass name='...'")
        if not callable(f):
            raise LabelModelError(f"LF {name!r}: f must be callable, got {type(f).__name__}")
        pre = list(pre or [])
        for p in pre:
            if not callable(p):
                raise LabelModelError(
                    f"LF {name!r}: preprocessor {p!r} is not callable; pass functions record -> record"
                )
        self.name = name
        self.f = f
        self.resources: dict[str, Any] = dict(resources or {})
        self.pre: list[Preprocessor] = pre
        self._global_ref: tuple[str, str] | None = None

    def preprocess(self, x: Any, cache: dict[tuple[int, ...], Any] | None = None) -> Any:
        """Run the preprocessors on ``x``.

        Parameters
        ----------
        x
            The record.
        cache
            Optional per-record memo shared by LFs: a preprocessor chain prefix already run on this record
            (the same preprocessor objects in the same order) is not run again.

        Returns
        -------
        Any
            The preprocessed record.
        """
        x = as_record(x)
        key: tuple[int, ...] = ()
        for p in self.pre:
            key = (*key, id(p))
            if cache is not None and key in cache:
                x = cache[key]
                continue
            out = p(copy.copy(x))
            if out is None:
                raise LabelModelError(
                    f"preprocessor {getattr(p, '__name__', p)!r} of LF {self.name!r} returned None; "
                    f"a preprocessor must return the (modified) record"
                )
            x = as_record(out)
            if cache is not None:
                cache[key] = x
        return x

    def raw_vote(self, x: Any, cache: dict[tuple[int, ...], Any] | None = None) -> Any:
        """Preprocess ``x`` and return the unvalidated output of ``f`` (used by the appliers)."""
        return self.f(self.preprocess(x, cache), **self.resources)

    def __call__(self, x: Any) -> int:
        """Label one record.

        Parameters
        ----------
        x
            A pandas row, namedtuple, dict (read as ``x.field`` or ``x["field"]``) or any object.

        Returns
        -------
        int
            A class index ``0..k-1`` or :data:`ABSTAIN`.
        """
        return check_vote(self.name, self.raw_vote(x))

    def __repr__(self) -> str:
        pre = f", pre={[getattr(p, '__name__', repr(p)) for p in self.pre]}" if self.pre else ""
        return f"LabelingFunction({self.name!r}{pre})"

    def __reduce_ex__(self, protocol: Any) -> Any:
        # An LF made by the decorator at module level replaced its function under the module's name, so the
        # function itself cannot be pickled by reference; pickle the LF by reference instead.
        if self._global_ref is not None:
            try:
                found = _resolve_global(*self._global_ref)
            except (ImportError, AttributeError):
                found = None
            if found is self:
                return (_resolve_global, self._global_ref)
        return super().__reduce_ex__(protocol)


def labeling_function(
    name: str | None = None,
    resources: Mapping[str, Any] | None = None,
    pre: Sequence[Preprocessor] | None = None,
) -> Callable[[Callable[..., Any]], LabelingFunction]:
    """Decorator that turns a function into a :class:`LabelingFunction`.

    Parameters
    ----------
    name
        Name of the LF; defaults to the function's name.
    resources
        Keyword arguments passed to the function on every call.
    pre
        Preprocessors ``record -> record`` run in order before the function.

    Returns
    -------
    Callable
        A decorator returning the :class:`LabelingFunction`.
    """
    if callable(name):
        raise LabelModelError(
            "labeling_function is a decorator factory: write @labeling_function() with parentheses"
        )

    def wrap(f: Callable[..., Any]) -> LabelingFunction:
        lf = LabelingFunction(name or f.__name__, f, resources=resources, pre=pre)
        module, qualname = getattr(f, "__module__", None), getattr(f, "__qualname__", "")
        if module and "<locals>" not in qualname:
            lf._global_ref = (module, qualname)
        return lf

    return wrap
