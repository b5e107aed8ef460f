"""The ``lfs`` step: Python labeling functions from a module -> one vote column per LF."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import pandas as pd

from orchestra.errors import OrchestraError
from orchestra.steps.base import Context, Step, register_step
from orchestra.task import Task

logger = logging.getLogger(__name__)


def load_module(spec: str) -> ModuleType:
    """Import a module by dotted name (``examples.spam_lfs``) or from a ``.py`` file path.

    Parameters
    ----------
    spec
        Dotted module name importable from ``sys.path``, or a path to a Python file.

    Returns
    -------
    module
    """
    if spec.endswith(".py") or "/" in spec or "\\" in spec:
        path = Path(spec)
        if not path.is_file():
            raise OrchestraError(f"LF module file {path} does not exist; give a .py file or a dotted module name")
        name = "orchestra_lfs_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12] + "_" + path.stem
        if name in sys.modules:
            return sys.modules[name]
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise OrchestraError(f"cannot load {path} as a Python module; is it a .py file?")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as err:
            del sys.modules[name]
            raise OrchestraError(f"importing LF module {path} failed: {type(err).__name__}: {err}") from err
        return module
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as err:
        raise OrchestraError(
            f"cannot import LF module {spec!r} ({err}); run from the folder that holds it, add it to PYTHONPATH, "
            "or give a path to the .py file"
        ) from err
    except Exception as err:
        raise OrchestraError(f"importing LF module {spec!r} failed: {type(err).__name__}: {err}") from err


def find_lfs(module: ModuleType, names: Sequence[str] | None = None) -> list[Any]:
    """The labeling functions a module defines: its ``LFS`` list if it has one, else every module-level LF.

    Parameters
    ----------
    module
        The imported module.
    names
        Keep only these LFs, in this order.

    Returns
    -------
    list of LabelingFunction
    """
    from labelmodel import LabelingFunction

    explicit = getattr(module, "LFS", None)
    if explicit is not None:
        lfs = list(explicit)
    else:
        lfs = [v for v in vars(module).values() if isinstance(v, LabelingFunction)]
    bad = [lf for lf in lfs if not isinstance(lf, LabelingFunction)]
    if bad:
        raise OrchestraError(f"{module.__name__}.LFS holds non-LFs {bad!r}; decorate them with @labeling_function()")
    by_name = {lf.name: lf for lf in lfs}
    if len(by_name) != len(lfs):
        raise OrchestraError(f"{module.__name__} defines two LFs with one name; LF names must be unique")
    if names is not None:
        missing = [n for n in names if n not in by_name]
        if missing:
            raise OrchestraError(f"LFs {missing} are not in {module.__name__}; it defines {sorted(by_name)}")
        lfs = [by_name[n] for n in names]
    if not lfs:
        raise OrchestraError(
            f"{module.__name__} defines no labeling functions; decorate functions with @labeling_function() "
            "or set LFS = [...]"
        )
    return lfs


@register_step("lfs")
class LabelingFunctions(Step):
    """Apply Python labeling functions; adds ``<prefix><lf name>`` vote columns (class index, -1 = abstain).

    Parameters
    ----------
    module
        Dotted module name or path to a ``.py`` file defining ``@labeling_function()`` functions (or ``LFS``).
    names
        Use only these LFs (default: all).
    prefix
        Prefix of the vote column names.
    n_jobs
        Worker processes for the LF applier.
    fields
        Record fields the LFs read (checked before running; default: not checked).
    """

    path_params: ClassVar[tuple[str, ...]] = ("module",)

    def __init__(
        self,
        module: str,
        names: Sequence[str] | None = None,
        prefix: str = "vote_",
        n_jobs: int = 1,
        fields: Sequence[str] | None = None,
    ) -> None:
        if not isinstance(module, str) or not module:
            raise OrchestraError(f"lfs: module must be a dotted module name or a .py path, got {module!r}")
        self.module = module
        self.names = list(names) if names is not None else None
        self.prefix = prefix
        self.n_jobs = n_jobs
        self.fields = list(fields) if fields is not None else None
        self._module = load_module(module)
        self._lfs = find_lfs(self._module, self.names)

    @property
    def lfs(self) -> list[Any]:
        """The labeling functions, in column order."""
        return list(self._lfs)

    def inputs(self, available: Sequence[str], task: Task | None) -> list[str]:
        return list(self.fields or [])

    def adds(self, available: Sequence[str], task: Task | None) -> list[str]:
        return [f"{self.prefix}{lf.name}" for lf in self._lfs]

    def run(self, batch: pd.DataFrame, context: Context) -> pd.DataFrame:
        from labelmodel import PandasLFApplier

        applier = PandasLFApplier(self._lfs)
        L = applier.apply(batch, n_jobs=self.n_jobs)
        faults = {k: v for k, v in getattr(applier, "fault_counts_", {}).items() if v}
        if faults:
            logger.warning("lfs %s: LFs raised and abstained on some rows: %s", self.name, faults)
        columns = self.adds(list(batch.columns), context.task)
        return pd.DataFrame(L.astype("int64"), columns=columns, index=batch.index)

    def __getstate__(self) -> dict[str, Any]:
        """Pickle (for Ray actors) with the LF module's source, so a worker needs no copy of the file."""
        state = {k: v for k, v in self.__dict__.items() if k not in ("_module", "_lfs")}
        source = getattr(self._module, "__file__", None)
        state["_module_name"] = self._module.__name__
        state["_module_file"] = source
        state["_module_source"] = Path(source).read_text(encoding="utf-8") if source else None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        name, file, source = state.pop("_module_name"), state.pop("_module_file"), state.pop("_module_source")
        self.__dict__.update(state)
        module = sys.modules.get(name)
        if module is None and source is not None:
            module = ModuleType(name)
            module.__file__ = file
            sys.modules[name] = module
            exec(compile(source, file or name, "exec"), module.__dict__)  # noqa: S102 - the user's own LF module
        elif module is None:
            module = importlib.import_module(name)
        self._module = module
        self._lfs = find_lfs(module, self.names)

    def fingerprint_extra(self) -> dict[str, Any]:
        source = getattr(self._module, "__file__", None)
        digest = hashlib.sha256(Path(source).read_bytes()).hexdigest() if source else None
        return {"module_source_sha256": digest}
