"""Token counting: Qwen's tokenizer from the dashscope package, offline; the estimate."""

from __future__ import annotations

import hashlib

from core.tokens import EstimateCounter, QwenCounter, counter_for, image_tokens, message_tokens
from core.types import Image


def test_qwen_models_use_the_qwen_tokenizer() -> None:
    counter = counter_for("qwen3.5-plus")
    assert isinstance(counter, QwenCounter)
    assert counter.count("Hello world") == 2
    assert counter.count("你好世界") < len("你好世界") + 1
    assert counter.count("<|im_start|>") > 1  # special tokens in user text are plain text


def test_other_models_get_the_estimate() -> None:
    counter = counter_for("gpt-4o-mini")
    assert isinstance(counter, EstimateCounter)
    assert counter.count("") == 0
    assert counter.count("abcd" * 10) == 10
    assert counter.count("你好世界") == 4


def test_images_and_messages() -> None:
    data = b"x"
    img = Image(data, "image/png", 280, 56, hashlib.sha256(data).hexdigest())
    assert image_tokens(img) == 10 * 2 + 2
    big = Image(data, "image/png", 4000, 4000, "")
    assert image_tokens(big) == 1280 + 2
    assert message_tokens(EstimateCounter(), "abcd", (img,)) == 1 + 22 + 4
