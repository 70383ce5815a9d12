"""One image and one question from the command line, without a config: ``vlrl predict-one MODEL_DIR --image cat.png
--question "How many cats?" [--template think]`` prints the record ``vlrl predict`` would write, as JSON. With
``--template plain`` the whole reply is the answer, since that template asks for no tags.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from datamodules.images import fit_image, image_factor, load_image
from datamodules.prompts import build_messages
from evaluation.records import completion_record
from lightning_modules.policy import load_policy
from rewards.templates import TEMPLATES, get_template
from rollout.engine import SamplingConfig
from rollout.hf import HFEngine


def predict_one(
    model: str,
    image: str,
    question: str,
    template: str = "caption",
    max_new_tokens: int = 512,
    temperature: float = 0.0,
    top_p: float = 1.0,
    dtype: str = "float32",
) -> dict[str, Any]:
    """Answer one question about one image with a checkpoint (HF engine; greedy unless ``temperature`` > 0)."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(model)
    ip = processor.image_processor
    pixels = getattr(ip, "size", None) or {}
    min_pixels = pixels.get("shortest_edge") or getattr(ip, "min_pixels", 3136)
    max_pixels = pixels.get("longest_edge") or getattr(ip, "max_pixels", 12845056)
    picture = fit_image(load_image(image, None, image), min_pixels, max_pixels, image, image_factor(ip))
    prompt = processor.apply_chat_template(
        build_messages(question, 1, template), add_generation_prompt=True, tokenize=False
    )
    engine = HFEngine()
    engine.setup(load_policy(model, dtype).eval(), processor)
    out = engine.generate([prompt], [[picture]], 1, SamplingConfig(temperature, top_p, 0, max_new_tokens))
    fallbacks = get_template(template).answer_fallbacks  # the whole reply for the plain template (no tags)
    return {"image": image, "problem": question, **completion_record(out, 0, fallbacks)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="vlrl predict-one", description="Answer one question about one image with a checkpoint."
    )
    parser.add_argument("model", help="a save_pretrained folder (e.g. an export) or hub id")
    parser.add_argument("--image", required=True)
    parser.add_argument("--question", required=True)
    parser.add_argument("--template", default="caption", choices=list(TEMPLATES))
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args(argv)
    record = predict_one(
        args.model,
        args.image,
        args.question,
        args.template,
        args.max_new_tokens,
        args.temperature,
        args.top_p,
        args.dtype,
    )
    print(json.dumps(record, ensure_ascii=False))


if __name__ == "__main__":
    main()
