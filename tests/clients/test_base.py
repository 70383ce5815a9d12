"""The shared pieces of the chat clients: the one message builder, the ``<think>`` a chat template opened put back,
and every client as a judge (``generate`` is ``chat`` on text-only requests with the client's system prompt)."""

from PIL import Image

from clients import ChatRequest, OpenAIChatClient, chat_messages, restore_think
from rewards.judges import Judge
from tests.chat_server import DESCRIPTION, ChatServer


def test_chat_messages_text_alone_is_a_string_and_images_come_before_the_text():
    assert chat_messages(ChatRequest("Say hi.")) == [{"role": "user", "content": "Say hi."}]
    red, blue = Image.new("RGB", (8, 8), "red"), Image.new("RGB", (8, 8), "blue")
    assert chat_messages(ChatRequest("Which colours?", [red, blue], "Be brief.")) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Which colours?"}]},
    ]
    # an HTTP client encodes each image its own way through image_part
    named = chat_messages(
        ChatRequest("q", [red]), image_part=lambda image: {"type": "color", "value": image.getpixel((0, 0))}
    )
    assert named == [
        {"role": "user", "content": [{"type": "color", "value": (255, 0, 0)}, {"type": "text", "text": "q"}]}
    ]


def test_restore_think_puts_back_the_tag_the_chat_template_opened():
    distill = "<｜User｜>Which option?<｜Assistant｜><think>\n"  # DeepSeek-R1 distills' generation prompt
    assert restore_think("so B.\n</think>\n\n<answer>B</answer>", distill) == (
        "<think>\nso B.\n</think>\n\n<answer>B</answer>"
    )  # the model's whole context, as it saw it
    assert restore_think("so B, still thinking", distill) == "<think>\nso B, still thinking"  # cut off: format fails
    assert restore_think("<think>so B</think> <answer>B</answer>", distill) == "<think>so B</think> <answer>B</answer>"
    # no prompt (an HTTP server without a reasoning parser): a closing tag without an opening one
    assert restore_think("so B</think> <answer>B</answer>") == "<think>so B</think> <answer>B</answer>"
    for unchanged in ("<think>so B</think> <answer>B</answer>", "<answer>B</answer>", "", "so B"):
        assert restore_think(unchanged) == unchanged
        assert restore_think(unchanged, "<|im_start|>assistant\n") == unchanged


def test_a_client_is_a_judge_whose_generate_sends_text_with_its_system_prompt():
    with ChatServer() as server:
        client = OpenAIChatClient(server.url, "describer", system_prompt="Answer briefly.", api_key_env=None)
        assert isinstance(client, Judge) and client.collective is False
        client.bind(engine=object(), processor=object())  # a client needs no engine: binding changes nothing
        assert client.generate(["q1", "q2"]) == [DESCRIPTION] * 2
        assert client.generate([]) == []
    assert sorted(r["messages"][-1]["content"] for r in server.requests) == ["q1", "q2"]
    assert all(r["messages"][0] == {"role": "system", "content": "Answer briefly."} for r in server.requests)
