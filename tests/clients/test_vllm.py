"""The offline vLLM client: the KV cache it asks vLLM for never depends on what other processes hold, and on the
tiny checkpoint (vLLM's CPU backend here) its greedy replies, images included, are the transformers client's."""

import pytest
from PIL import Image

from clients import ChatRequest, HFChatClient
from clients.vllm import VLLMChatClient, kv_cache_args


def test_kv_cache_size_never_depends_on_other_processes(monkeypatch):
    pytest.importorskip("vllm")  # on_cpu asks vLLM which platform it runs on
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    assert kv_cache_args(0.25) == {"kv_cache_memory_bytes": 2**28}
    if kv_cache_args(None) == {}:
        pytest.skip("vLLM runs on a GPU here: it sizes the cache from gpu_memory_utilization")
    assert kv_cache_args(None) == {"kv_cache_memory_bytes": 2**30}  # vLLM's CPU backend
    assert kv_cache_args(None, cpu_default_gib=VLLMChatClient.CPU_KV_CACHE_GIB) == {"kv_cache_memory_bytes": 2**30}
    assert kv_cache_args(None, {"kv_cache_memory_bytes": 2**27}) == {}  # sized in engine_kwargs already
    with pytest.raises(ValueError, match="once"):
        kv_cache_args(0.5, {"kv_cache_memory_bytes": 2**27})
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "2")  # vLLM's own setting: it applies it over ours
    assert kv_cache_args(None) == {}


@pytest.mark.slow
@pytest.mark.vllm
def test_greedy_replies_match_the_transformers_client(think_checkpoint):
    requests = [
        ChatRequest("What colour is it?", [Image.new("RGB", (56, 56), (40, 170, 60))]),
        ChatRequest("Say hi.", [], "Be brief."),
    ]
    client = VLLMChatClient(
        str(think_checkpoint), max_new_tokens=6, dtype="float32", enforce_eager=True, max_model_len=1024
    )
    try:
        replies = client.chat(requests)
        client.keep_reasoning = True
        kept = client.chat(requests)
        assert client.chat([]) == []
    finally:
        client.close()
    assert replies == HFChatClient(str(think_checkpoint), max_new_tokens=6, dtype="float32").chat(requests)
    assert kept == ["<think>\n" + text for text in replies]  # the <think> the chat template opened, put back
