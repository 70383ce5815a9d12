"""A chat client on a local transformers model: a causal LM (text only) or a VLM (text, or images and text).

Loaded with transformers directly (``AutoModelForImageTextToText``, else ``AutoModelForCausalLM``; the checkpoint's
``AutoProcessor``, which for a text-only model is its tokenizer) and kept frozen: eval mode, no gradients, never a
submodule of the policy module, so it is not an optimizer parameter and not saved in checkpoints. Prompts are
rendered with the checkpoint's own chat template and generated in left-padded batches; generation stops where the
checkpoint's generation config says.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor

from clients.base import ChatClient, ChatRequest, chat_messages


def load_chat_model(model_name_or_path: str, dtype: str = "auto") -> Any:
    """The checkpoint's whole model: a VLM with its vision tower when it has one, else a causal LM."""
    try:
        return AutoModelForImageTextToText.from_pretrained(model_name_or_path, dtype=dtype)
    except ValueError:  # not an image-text-to-text checkpoint: a text-only language model
        return AutoModelForCausalLM.from_pretrained(model_name_or_path, dtype=dtype)


class HFChatClient(ChatClient):
    """Args (and ``ChatClient``'s sampling settings):
    model: a checkpoint folder or hub id, or an already loaded model (then ``processor`` is required).
    processor: the model's processor or tokenizer (default: the checkpoint's ``AutoProcessor``).
    dtype: for loading ("auto": the checkpoint's).
    device: where the model runs (default: where it was loaded).
    batch_size: requests per ``generate`` call.
    """

    def __init__(
        self,
        model: str | Any,
        processor: Any = None,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        system_prompt: str | None = None,
        keep_reasoning: bool = False,
        dtype: str = "auto",
        device: str | None = None,
        batch_size: int = 16,
    ) -> None:
        super().__init__(max_new_tokens, temperature, top_p, top_k, system_prompt, keep_reasoning)
        if isinstance(model, str):
            processor = processor or AutoProcessor.from_pretrained(model)
            model = load_chat_model(model, dtype)
        if processor is None:
            raise ValueError("HFChatClient needs a processor (or tokenizer) when given a loaded model")
        self.device = torch.device(device) if device else next(model.parameters()).device
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)  # a processor wraps one; a tokenizer is one
        self.batch_size = batch_size

    def render(self, request: ChatRequest) -> str:
        """The request as the model's prompt text (its chat template, up to the generation prompt)."""
        return self.processor.apply_chat_template(chat_messages(request), tokenize=False, add_generation_prompt=True)

    def encode(self, prompts: list[str], images: list[Any]) -> dict[str, torch.Tensor]:
        """Model inputs for rendered ``prompts`` and all their ``images`` in order, left-padded: input_ids and
        attention_mask [b, P] (and the processor's image inputs)."""
        side, self.tokenizer.padding_side = self.tokenizer.padding_side, "left"
        try:
            if self.processor is self.tokenizer:
                if images:
                    raise ValueError("this model has a tokenizer, not a processor: it cannot take images")
                return self.tokenizer(prompts, padding=True, return_tensors="pt", add_special_tokens=False)
            return self.processor(
                text=prompts, images=images or None, padding=True, return_tensors="pt", add_special_tokens=False
            )
        finally:
            self.tokenizer.padding_side = side

    def sampling_kwargs(self) -> dict[str, Any]:
        """``generate``'s sampling arguments: greedy at temperature 0, else temperature, top-p and top-k (0 switches
        top-k off; None would take the checkpoint's generation config's)."""
        if self.temperature <= 0:
            return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k}

    @torch.no_grad()
    def chat(self, requests: Sequence[ChatRequest]) -> list[str | None]:
        out: list[str | None] = []
        for start in range(0, len(requests), self.batch_size):
            chunk = requests[start : start + self.batch_size]
            prompts = [self.render(r) for r in chunk]
            enc = self.encode(prompts, [image for r in chunk for image in r.images]).to(self.device)
            ids = self.model.generate(
                **enc,
                max_new_tokens=self.max_new_tokens,
                pad_token_id=self.tokenizer.pad_token_id,
                **self.sampling_kwargs(),
            )  # [b, P + C]
            texts = self.tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            out.extend(self.finish(text, prompt) for text, prompt in zip(texts, prompts))
        return out

    def close(self) -> None:
        del self.model
