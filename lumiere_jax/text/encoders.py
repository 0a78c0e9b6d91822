"""Picks the frozen text encoder named by the config (`text_encoder`)."""

from __future__ import annotations

import os
from typing import Any

from lumiere_jax.text.minilm import MiniLMTextEncoder
from lumiere_jax.text.t5 import T5TextEncoder

ENCODERS = ("minilm", "t5:<local Hugging Face T5/umt5 folder>")


def load_text_encoder(name: str, path: str = "", max_length: int = 24) -> Any:
    """Returns an encoder with `encode(texts) -> (features [N, L, D], mask [N, L])`, `feature_dim`, `name`.

    `name` is "minilm" (`path`: its folder, empty for the pip package's) or
    "t5:<folder>" for a T5 v1.1 / flan-t5 / umt5 folder ("t5" alone takes `path`).
    """
    if name == "minilm":
        return MiniLMTextEncoder.from_pretrained(path or None, max_length=max_length)
    if name == "t5" or name.startswith("t5:"):
        folder = name[len("t5:"):] or path
        if not folder:
            raise ValueError(
                f"text_encoder={name!r} needs a local folder: set --config.text_encoder="
                "t5:/path/to/t5-v1_1-xxl (config.json, tokenizer, *.safetensors)."
            )
        if path and os.path.expanduser(path) != os.path.expanduser(folder):
            raise ValueError(
                f"text_encoder={name!r} and text_encoder_path={path!r} name different folders; "
                "give the folder in one of them."
            )
        folder = os.path.expanduser(folder)
        if not os.path.isdir(folder):
            raise FileNotFoundError(
                f"text_encoder={name!r}: folder {folder} does not exist; point t5:<folder> at a "
                "local Hugging Face T5/umt5 folder (config.json, tokenizer, *.safetensors)."
            )
        return T5TextEncoder.from_pretrained(folder, max_length=max_length)
    raise ValueError(
        f"text_encoder={name!r} is not one of {ENCODERS}; set --config.text_encoder=minilm "
        "or --config.text_encoder=t5:/path/to/folder."
    )
