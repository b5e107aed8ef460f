"""Composition layer (floor 4): tasks, pipelines of steps, YAML pipelines, batch jobs, reports, the CLI."""

from orchestra.errors import OrchestraError
from orchestra.executors import EngineRecipe, Executor, LocalExecutor
from orchestra.io import read_records, write_table
from orchestra.pipeline import Pipeline
from orchestra.runner import run_file
from orchestra.steps import Context, LabelingFunctions, LabelModelStep, PromptStep, Step, register_step
from orchestra.task import Task

__all__ = [
    "Context",
    "EngineRecipe",
    "Executor",
    "LocalExecutor",
    "LabelModelStep",
    "LabelingFunctions",
    "OrchestraError",
    "Pipeline",
    "PromptStep",
    "Step",
    "Task",
    "read_records",
    "register_step",
    "run_file",
    "write_table",
]
