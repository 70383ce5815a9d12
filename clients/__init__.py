"""One chat client family (local transformers model, OpenAI-compatible HTTP, offline vLLM), used as the caption
reward's judges and as the cold-start pipeline's models (see ``clients.base``)."""

from clients.base import ChatClient, ChatRequest, chat_messages, restore_think
from clients.hf import HFChatClient
from clients.openai import OpenAIChatClient
from clients.vllm import VLLMChatClient

__all__ = [
    "ChatClient",
    "ChatRequest",
    "HFChatClient",
    "OpenAIChatClient",
    "VLLMChatClient",
    "chat_messages",
    "restore_think",
]
