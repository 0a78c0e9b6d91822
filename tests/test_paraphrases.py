"""The paraphrase prompt set: the evaluator's attributes in words and sentence forms that no training caption
uses, so it measures what the frozen text encoder carries over to unseen wording."""

import re

import numpy as np
import pytest

from configs import t2v
from lumiere_jax import config_lib, evaluate
from lumiere_jax.data import shapes
from lumiere_jax.eval import paraphrases


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def _all_single_object_captions() -> set[str]:
    return {c for color in shapes.COLORS for shape in shapes.SHAPES for motion in shapes.MOTIONS
            for c in shapes.single_object_captions(color, shape, motion)}


def test_single_object_captions_covers_what_the_caption_generator_writes():
    """The enumeration the next test relies on holds every caption the shapes world writes for one object."""
    every = _all_single_object_captions()
    rng = np.random.default_rng(0)
    drawn = 0
    for _ in range(3000):
        spec = shapes.sample_clip_spec(rng)
        if len(spec.objects) == 1:
            assert shapes.caption(spec, rng) in every
            drawn += 1
    assert drawn > 1000


def test_no_paraphrase_prompt_is_a_training_caption():
    every = _all_single_object_captions()
    prompts = [p["prompt"] for p in evaluate.eval_prompts(240, seed=1234, prompt_set="paraphrase")]
    # The default evaluation's 60 prompts are 60 different wordings.
    assert len({p["prompt"] for p in evaluate.eval_prompts(60, seed=1234, prompt_set="paraphrase")}) == 60
    assert not set(prompts) & every
    # Stronger: every prompt names its colour and its shape with words no training caption contains.
    training_words = set().union(*(_words(c) for c in every))
    for p in prompts:
        assert not {"red", "green", "blue", "yellow", "magenta", "cyan", "orange", "white"} & _words(p), p
        assert not {"circle", "square", "triangle"} & _words(p), p
        assert _words(p) - training_words, p


def test_paraphrase_prompts_keep_the_template_sets_attributes():
    template = evaluate.eval_prompts(60, seed=7)
    para = evaluate.eval_prompts(60, seed=7, prompt_set="paraphrase")
    assert [{k: x[k] for k in ("color", "shape", "motion")} for x in template] == \
        [{k: x[k] for k in ("color", "shape", "motion")} for x in para]
    for x in para:
        assert any(w in x["prompt"] for w in paraphrases.COLOR_WORDS[x["color"]])
        assert any(w in x["prompt"] for w in paraphrases.SHAPE_WORDS[x["shape"]])
    assert "emerald cube" in " | ".join(paraphrases.paraphrase("green", "square", "right", v) for v in range(18))


def test_the_prompt_set_is_a_checked_config_key():
    config = t2v.get_config("smoke")
    with config.unlocked():
        config.eval.prompts = "paraphrases"
    with pytest.raises(ValueError, match="eval.prompts='paraphrases' must be one of"):
        config_lib.validate_eval(config)
    with pytest.raises(ValueError, match="no paraphrase"):
        paraphrases.paraphrase("purple", "circle", "left", 0)
