"""Vision-R1's modality-bridging cold-start data pipeline (see ``pipeline``)."""

from tools.cold_start.backends import (
    ChatBackend,
    ChatRequest,
    HFBackend,
    OpenAIBackend,
    VLLMBackend,
    restore_think,
)
from tools.cold_start.filters import FilterConfig, rejection_reason
from tools.cold_start.pipeline import Prompts, run_cli, run_pipeline

__all__ = [
    "ChatBackend",
    "ChatRequest",
    "FilterConfig",
    "HFBackend",
    "OpenAIBackend",
    "Prompts",
    "VLLMBackend",
    "rejection_reason",
    "restore_think",
    "run_cli",
    "run_pipeline",
]
