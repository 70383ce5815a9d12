"""Vision-R1's modality-bridging cold-start data pipeline (see ``pipeline``)."""

from datamodules.cold_start.backends import (
    ChatBackend,
    ChatRequest,
    HFBackend,
    OpenAIBackend,
    VLLMBackend,
    restore_think,
)
from datamodules.cold_start.filters import FilterConfig, rejection_reason
from datamodules.cold_start.pipeline import Prompts, run_cli, run_pipeline

__all__ = ["ChatBackend", "ChatRequest", "FilterConfig", "HFBackend", "OpenAIBackend", "Prompts", "VLLMBackend",
           "rejection_reason", "restore_think", "run_cli", "run_pipeline"]  # fmt: skip
