"""Picks the frozen text encoder named by the config (`text_encoder`)."""

from __future__ import annotations

from typing import Any

ENCODERS = ("minilm",)


def load_text_encoder(name: str, path: str = "", max_length: int = 24) -> Any:
    """Returns an encoder with `encode(texts) -> (features [N, L, D], mask [N, L])`, `feature_dim`, `name`."""
    if name == "minilm":
        from lumiere_jax.text.minilm import MiniLMTextEncoder
        return MiniLMTextEncoder.from_pretrained(path or None, max_length=max_length)
    raise ValueError(f"text_encoder={name!r} is not one of {ENCODERS}; set --config.text_encoder=minilm.")
