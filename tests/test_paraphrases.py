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


def test_the_carryover_readout_sorts_training_captions_by_template_and_holds_a_template_out():
    """benchmarks/text_carryover.py: every one-object caption falls under exactly its template (5 equal groups), and
    the held-out-template choice of ridge weight scores a readout on a template it was not fitted on."""
    import os
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
    import text_carryover

    texts, labels, groups = text_carryover.training_captions()
    assert len(texts) == len(set(texts)) == len(labels) and sorted(set(groups)) == [0, 1, 2, 3, 4]
    assert len({groups.count(g) for g in set(groups)}) == 1
    assert text_carryover.template_of("a red circle that stays still") == 3
    assert text_carryover.template_of("a red circle stays still") == 1
    # Features where the label is one coordinate in templates 0-3 and another in template 4: the readout fitted
    # without template 4 fails on it, so leave-one-template-out scores below 1.
    rng = np.random.default_rng(0)
    y = np.eye(3)[rng.integers(3, size=500)]
    g = np.repeat(np.arange(5), 100)
    x = rng.normal(size=(500, 6)) * 0.1
    x[g < 4, :3] += y[g < 4]
    x[g == 4, 3:] += y[g == 4]
    ridge, scores = text_carryover.choose_ridge(x, y, g)
    assert ridge in text_carryover.RIDGES and max(scores.values()) <= 0.9
    model = text_carryover.fit_ridge(x[g < 4], y[g < 4], 1.0)
    assert (text_carryover.predict(model, x[g < 4]) == y[g < 4].argmax(1)).mean() == 1.0
