"""Pipeline steps: the protocol, the registry and the built-in steps (``lfs``, ``label_model``, ``prompt``, ``ama``)."""

from orchestra.steps.ama import AMAStep
from orchestra.steps.base import Context, Step, make_step, register_step, registered_steps
from orchestra.steps.embroid import EmbroidStep
from orchestra.steps.label_model import LabelModelStep
from orchestra.steps.lfs import LabelingFunctions
from orchestra.steps.prompt import PromptStep

__all__ = [
    "AMAStep",
    "Context",
    "EmbroidStep",
    "LabelModelStep",
    "LabelingFunctions",
    "PromptStep",
    "Step",
    "make_step",
    "register_step",
    "registered_steps",
]
