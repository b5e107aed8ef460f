"""The step protocol, the context steps run in, and the registry that lets YAML name steps.

A step adds columns and never changes the ones it did not add. A user step is ten lines::

    from orchestra import Step, register_step

    @register_step("length")
    class Length(Step):
        def __init__(self, field: str = "text") -> None:
            self.field = field
        def inputs(self, available, task):
            return [self.field]
        def adds(self, available, task):
            return ["length"]
        def run(self, batch, context):
            return pd.DataFrame({"length": batch[self.field].str.len()}, index=batch.index)
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pandas as pd

from orchestra.errors import OrchestraError
from orchestra.task import Task

logger = logging.getLogger(__name__)

REGISTRY: dict[str, type[Step]] = {}


@dataclass
class Context:
    """What a step may use besides its batch.

    Parameters
    ----------
    task
        The labeling task, or None for pipelines that need none.
    engine
        An engine-like object (``score`` / ``generate``), usually behind the response cache; None when no
        step needs a model.
    seed
        Seed for every random choice a step makes.
    base_dir
        Folder that relative paths in step parameters resolve against.
    artifacts
        Step name -> what the step learned (a fitted label model, ...), for reports.
    """

    task: Task | None = None
    engine: Any = None
    seed: int = 0
    base_dir: str | None = None
    artifacts: dict[str, Any] = field(default_factory=dict)


class Step:
    """Base class of pipeline steps.

    Subclasses set their parameters in ``__init__`` and implement :meth:`adds` and :meth:`run`; they override
    :meth:`inputs` when they read record fields and set ``needs_all_rows = True`` when they must see every row
    at once (a label model fits on all votes before it labels any row). ``needs_engine = True`` asks for a model.
    """

    step_type: ClassVar[str] = ""
    needs_all_rows: ClassVar[bool] = False
    needs_engine: ClassVar[bool] = False

    @property
    def name(self) -> str:
        """The step's name in this pipeline (its registered type unless renamed)."""
        return self.__dict__.get("_name") or self.step_type or type(self).__name__.lower()

    @name.setter
    def name(self, value: str) -> None:
        self.__dict__["_name"] = value

    def inputs(self, available: Sequence[str], task: Task | None) -> list[str]:
        """Columns the step reads.

        Parameters
        ----------
        available
            Columns present before the step runs.
        task
            The task, or None.

        Returns
        -------
        list of str
        """
        return []

    def adds(self, available: Sequence[str], task: Task | None) -> list[str]:
        """Columns the step adds.

        Parameters
        ----------
        available
            Columns present before the step runs.
        task
            The task, or None.

        Returns
        -------
        list of str
        """
        raise NotImplementedError(f"step {type(self).__name__} must implement adds()")

    def run(self, batch: pd.DataFrame, context: Context) -> pd.DataFrame:
        """Compute the new columns for a batch of rows.

        Parameters
        ----------
        batch
            The rows (all columns present so far); do not modify it.
        context
            Task, engine, seed and artifacts.

        Returns
        -------
        pandas.DataFrame
            Exactly the columns of :meth:`adds`, with ``batch``'s index.
        """
        raise NotImplementedError(f"step {type(self).__name__} must implement run()")

    def params(self) -> dict[str, Any]:
        """The constructor parameters as JSON-able values (they fingerprint a job)."""
        out: dict[str, Any] = {}
        for key in inspect.signature(type(self).__init__).parameters:
            if key != "self" and key in self.__dict__:
                out[key] = self.__dict__[key]
        return out

    def fingerprint_extra(self) -> dict[str, Any]:
        """Extra state that changes the step's output (e.g. the source of an LF module)."""
        return {}


def register_step(name: str) -> Callable[[type[Step]], type[Step]]:
    """Class decorator: register a :class:`Step` subclass under ``name`` so YAML can refer to it.

    Parameters
    ----------
    name
        The name used as the step's key in a YAML ``steps`` list.

    Returns
    -------
    Callable
        The decorator (returns the class unchanged apart from ``step_type``).
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise OrchestraError(f"step names must be identifiers like 'my_step', got {name!r}")

    def wrap(cls: type[Step]) -> type[Step]:
        if not (isinstance(cls, type) and issubclass(cls, Step)):
            raise OrchestraError(f"@register_step({name!r}) decorates Step subclasses, got {cls!r}")
        previous = REGISTRY.get(name)
        if previous is not None and previous is not cls:
            logger.warning("step %r re-registered: %s replaces %s", name, cls.__qualname__, previous.__qualname__)
        cls.step_type = name
        REGISTRY[name] = cls
        return cls

    return wrap


def registered_steps() -> list[str]:
    """Names of all registered steps, sorted."""
    return sorted(REGISTRY)


def make_step(step_type: str, params: dict[str, Any] | None, name: str | None = None) -> Step:
    """Build a registered step from its name and parameters (as written in YAML).

    Parameters
    ----------
    step_type
        Registered name, e.g. ``"label_model"``.
    params
        Keyword arguments of the step's constructor.
    name
        The step's name in the pipeline (defaults to ``step_type``).

    Returns
    -------
    Step
    """
    cls = REGISTRY.get(step_type)
    if cls is None:
        raise OrchestraError(
            f"unknown step {step_type!r}; registered steps are {registered_steps()} (register your own with "
            "@register_step)"
        )
    params = dict(params or {})
    try:
        inspect.signature(cls).bind(**params)
    except TypeError as err:
        accepted = [p for p in inspect.signature(cls).parameters if p not in ("self", "args", "kwargs")]
        raise OrchestraError(f"step {step_type!r}: {err}; it accepts {accepted}") from err
    step = cls(**params)
    if name:
        step.name = name
    return step
