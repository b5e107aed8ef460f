"""LLM inference behind one vLLM-compatible interface (floor 1)."""

from engine.errors import EngineError
from engine.llm import LLM
from engine.outputs import ChoiceScore, CompletionOutput, RequestOutput, ScoreOutput
from engine.sampling_params import SamplingParams

__all__ = [
    "LLM",
    "SamplingParams",
    "RequestOutput",
    "CompletionOutput",
    "ScoreOutput",
    "ChoiceScore",
    "EngineError",
]
