"""Vision-R1's modality-bridging cold-start data pipeline (see ``pipeline``); its models are ``clients.ChatClient``s."""

from tools.cold_start.filters import FilterConfig, rejection_reason
from tools.cold_start.pipeline import Prompts, run_cli, run_pipeline

__all__ = ["FilterConfig", "Prompts", "rejection_reason", "run_cli", "run_pipeline"]
