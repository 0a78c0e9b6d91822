"""Evaluation prompts worded as a user would type them, in words and sentence forms no training caption uses.

    paraphrase("green", "square", "right", 3)   # e.g. "an emerald cube travelling eastward"

The shapes world's captions come from a small vocabulary and five templates (data/shapes.py). A user writes
"an emerald cube travelling to the right". These prompts keep the attribute the checker reads (the colour,
shape and motion of one object) and change the words: colour synonyms, other nouns for the shapes, other
verbs and direction words for the motions, and other word orders. What the video model makes of them is what
the frozen text encoder carries over from words it never saw in training, as Lumiere's frozen T5 serves
prompts outside its video captions.
"""

from __future__ import annotations

from lumiere_jax.data import shapes

PROMPT_SETS = ("template", "paraphrase")  # config.eval.prompts: training-caption wording, or these

# Per attribute, words that no training caption uses (tests/test_paraphrases.py checks them against every
# phrasing data/shapes.py can produce).
COLOR_WORDS: dict[str, tuple[str, ...]] = {
    "red": ("crimson", "scarlet", "ruby"),
    "green": ("emerald", "lime", "jade"),
    "blue": ("azure", "cobalt", "sapphire"),
    "yellow": ("golden", "lemon", "canary"),
    "magenta": ("fuchsia", "hot pink", "purplish pink"),
    "cyan": ("turquoise", "aqua", "teal"),
    "orange": ("tangerine", "amber", "pumpkin"),
    "white": ("pearly", "ivory", "milky"),
}
SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("disc", "ball", "dot"),
    "square": ("cube", "box", "block"),
    "triangle": ("pyramid", "wedge", "three-sided shape"),
}
# Motion -> (participle phrase, clause phrase): "an X <participle>", "the X <clause>".
MOTION_WORDS: dict[str, tuple[tuple[str, str], ...]] = {
    "left": (("travelling west", "heads west"), ("sliding leftwards", "glides leftwards"),
             ("heading for the left edge", "crosses to the left edge")),
    "right": (("travelling eastward", "heads east"), ("sliding rightwards", "glides rightwards"),
              ("heading for the right edge", "crosses to the right edge")),
    "up": (("rising", "rises"), ("climbing to the top", "climbs higher"), ("floating upwards", "floats upwards")),
    "down": (("sinking", "sinks"), ("falling to the bottom", "falls lower"), ("dropping downwards", "drops")),
    "still": (("at rest", "does not move"), ("frozen in place", "remains motionless"),
              ("resting motionless", "sits in one place")),
}
# Sentence forms: {np} the noun phrase with its article, {noun} without, {part} / {clause} the motion.
FORMS: tuple[str, ...] = (
    "{np} {part}",
    "here {np} {clause}",
    "{part}: {np}",
    "a clip where the {noun} {clause}",
    "watch the {noun} as it {clause}",
)


def _article(words: str) -> str:
    return ("an " if words[0] in "aeiou" else "a ") + words


def paraphrase(color: str, shape: str, motion: str, variant: int) -> str:
    """The variant-th paraphrase of a one-object prompt; variants cycle through words and forms."""
    if color not in COLOR_WORDS or shape not in SHAPE_WORDS or motion not in MOTION_WORDS:
        raise ValueError(f"no paraphrase for ({color!r}, {shape!r}, {motion!r}): colour, shape and motion must be "
                         f"among {shapes.COLORS}, {shapes.SHAPES}, {shapes.MOTIONS}.")
    colors, nouns, moves = COLOR_WORDS[color], SHAPE_WORDS[shape], MOTION_WORDS[motion]
    # Coprime strides, so consecutive variants change every word and the form.
    noun = f"{colors[variant % len(colors)]} {nouns[(variant // 2) % len(nouns)]}"
    part, clause = moves[(variant // 3) % len(moves)]
    form = FORMS[variant % len(FORMS)]
    return form.format(np=_article(noun), noun=noun, part=part, clause=clause)
