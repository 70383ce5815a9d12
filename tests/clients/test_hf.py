"""The local transformers client on the tiny Qwen2.5-VL checkpoint: a frozen model, replies for text and for images,
one reply per request in order whatever the batch size, greedy replies that do not depend on the batch, a loaded
model with its processor, and the ``<think>`` a distill-style chat template opened put back when keeping reasoning."""

import pytest
import torch
from PIL import Image
from transformers import AutoProcessor

from clients import ChatRequest, HFChatClient
from clients.hf import load_chat_model
from rewards import CaptionReward

GREEN = Image.new("RGB", (56, 56), (40, 170, 60))


@pytest.fixture(scope="module")
def client(tiny_checkpoint):
    return HFChatClient(str(tiny_checkpoint), max_new_tokens=4, batch_size=2)


def test_the_model_is_frozen_and_never_trained(client):
    assert not client.model.training and not any(p.requires_grad for p in client.model.parameters())


def test_one_reply_per_request_in_order_whatever_the_batch(client, tiny_checkpoint):
    requests = [ChatRequest("What is 2+2?"), ChatRequest("What colour is it?", [GREEN]), ChatRequest("Hi.", [], "Hm.")]
    replies = client.chat(requests)  # batches of 2: [text, image], [text]
    assert len(replies) == 3 and all(isinstance(r, str) for r in replies)
    one_by_one = [client.chat([r])[0] for r in requests]
    assert one_by_one == replies  # greedy: left padding does not change a reply
    assert client.generate(["What is 2+2?"]) == replies[:1]  # the judge interface: the same text-only request


def test_a_client_judges_captions(client):
    reward = CaptionReward(judge=client)
    out = reward(
        ["<info>a red circle</info>", "no caption"],
        problem=["q", "q"],
        solution=["red", "red"],
        problem_type=["free_form"] * 2,
    )
    assert out.shape == (2,) and out[1].item() == 0.0 and reward.metrics()["caption/judged"] == 1.0


def test_a_loaded_model_needs_its_processor(tiny_checkpoint, client):
    model = load_chat_model(str(tiny_checkpoint))
    with pytest.raises(ValueError, match="processor"):
        HFChatClient(model)
    loaded = HFChatClient(model, AutoProcessor.from_pretrained(tiny_checkpoint), max_new_tokens=4)
    assert loaded.chat([ChatRequest("What is 2+2?")]) == client.chat([ChatRequest("What is 2+2?")])


def test_sampling_follows_the_settings(tiny_checkpoint):
    sampled = HFChatClient(str(tiny_checkpoint), max_new_tokens=8, temperature=1.0, top_k=0)
    assert sampled.sampling_kwargs() == {"do_sample": True, "temperature": 1.0, "top_p": 1.0, "top_k": 0}
    torch.manual_seed(0)
    first = sampled.chat([ChatRequest("Hi.")] * 4)
    torch.manual_seed(0)
    assert sampled.chat([ChatRequest("Hi.")] * 4) == first  # reproducible under torch's seed
    assert len(set(first)) > 1  # sampled, at temperature 1 a random model's replies differ


def test_keep_reasoning_restores_the_think_the_chat_template_opened(think_checkpoint):
    raw = HFChatClient(str(think_checkpoint), max_new_tokens=6)
    kept = HFChatClient(raw.model, raw.processor, max_new_tokens=6, keep_reasoning=True)
    assert raw.render(ChatRequest("Hi.")).endswith("<think>\n")
    requests = [ChatRequest("What colour is it?", [GREEN]), ChatRequest("Hi.")]
    plain, restored = raw.chat(requests), kept.chat(requests)
    assert restored == ["<think>\n" + text for text in plain]
