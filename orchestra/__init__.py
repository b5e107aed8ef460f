"""Composition layer (floor 4): tasks, pipelines of steps, YAML pipelines, batch jobs, reports, the CLI."""

from orchestra.errors import OrchestraError
from orchestra.io import read_records, write_table
from orchestra.pipeline import Pipeline
from orchestra.steps import Context, LabelingFunctions, LabelModelStep, PromptStep, Step, register_step
from orchestra.task import Task

__all__ = [
    "Context",
    "LabelModelStep",
    "LabelingFunctions",
    "OrchestraError",
    "Pipeline",
    "PromptStep",
    "Step",
    "Task",
    "read_records",
    "register_step",
    "write_table",
]
