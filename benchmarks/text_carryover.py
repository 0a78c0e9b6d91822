r"""What the frozen text encoder carries over to unseen wording: a linear readout of its features.

    python benchmarks/text_carryover.py            # configs/t2v.py tiny's encoder (MiniLM), about 3 minutes

The paraphrase set (lumiere_jax/eval/paraphrases.py) measures how well the video model follows prompts in words
no training caption uses. This asks the same of the text features alone, with no video model: a ridge readout,
one per attribute (colour, shape, motion), fitted on the features of every one-object caption the shapes world
writes (data/shapes.py: all phrasings, sizes and speeds), then applied to the evaluator's paraphrase prompts and
to its canonical prompts. Features: each caption's token features averaged over its tokens, beside their
maximum over tokens. The ridge weight is chosen by leave-one-template-out cross-validation on the training
captions alone (the paraphrases never choose anything; ties go to the stronger weight), and the paraphrase
accuracy of every weight is recorded beside it. Where the readout fails on a paraphrase at every weight, no
linear map of the features learnt from the training captions carries the value over to the new words; a
video model conditioned on them is not bound to a linear map, so this is evidence, not a bound.

Writes benchmarks/results/<out>.json.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import bench_common as bc  # noqa: E402
from configs import t2v as t2v_configs  # noqa: E402
from lumiere_jax import evaluate  # noqa: E402
from lumiere_jax.data import shapes  # noqa: E402
from lumiere_jax.text.encoders import load_text_encoder  # noqa: E402

ATTRIBUTES = ("color", "shape", "motion")
RIDGES = (0.1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5)


def training_captions() -> tuple[list[str], list[tuple[str, str, str]], list[int]]:
    """Every one-object caption the shapes world writes, its (colour, shape, motion), and which template words it."""
    texts, labels, groups = [], [], []
    for color in shapes.COLORS:
        for shape in shapes.SHAPES:
            for motion in shapes.MOTIONS:
                for text in shapes.single_object_captions(color, shape, motion):
                    texts.append(text)
                    labels.append((color, shape, motion))
                    groups.append(template_of(text))
    return texts, labels, groups


def template_of(caption: str) -> int:
    """The index of the template whose fixed words a one-object caption uses (data/shapes.py's _TEMPLATES)."""
    for i, marker in ((3, " that stays still"), (0, " staying still"), (1, " stays still"), (2, " not moving"),
                      (4, " standing still"), (3, " that slides "), (0, " moving "), (1, " moves "), (2, " going "),
                      (4, " drifting ")):
        if marker in caption:
            return i
    raise ValueError(f"no template of data/shapes.py words {caption!r}")


def features(encoder, texts: list[str], batch: int = 256) -> np.ndarray:
    """[N, 2D]: each text's token features averaged over its tokens, then their maximum over tokens."""
    out = []
    for i in range(0, len(texts), batch):
        f, m = encoder.encode(texts[i:i + batch])
        f, m = np.asarray(f, np.float32), np.asarray(m, np.float32)[..., None]  # [n, L, D], [n, L, 1]
        out.append(np.concatenate([(f * m).sum(1) / m.sum(1), np.where(m > 0, f, -np.inf).max(1)], axis=1))
    return np.concatenate(out)


def fit_ridge(x: np.ndarray, y: np.ndarray, ridge: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-vs-all ridge regression onto one-hot labels y [N, K] of standardised x; returns (mean, std, weights)."""
    mean, std = x.mean(0), x.std(0) + 1e-6
    z = (x - mean) / std
    w = np.linalg.solve(z.T @ z + ridge * np.eye(z.shape[1]), z.T @ y)
    return mean, std, w


def predict(model: tuple[np.ndarray, np.ndarray, np.ndarray], x: np.ndarray) -> np.ndarray:
    mean, std, w = model
    return (((x - mean) / std) @ w).argmax(1)


def choose_ridge(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> tuple[float, dict[str, float]]:
    """The ridge weight of RIDGES with the best leave-one-group-out accuracy, and every weight's accuracy."""
    scores = {}
    for ridge in RIDGES:
        hits = 0
        for g in np.unique(groups):
            held = groups == g
            hits += int((predict(fit_ridge(x[~held], y[~held], ridge), x[held]) == y[held].argmax(1)).sum())
        scores[f"{ridge:g}"] = hits / len(x)
    best = max(RIDGES, key=lambda r: (scores[f"{r:g}"], r))
    return best, scores


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config_arg", default="size=tiny", help="configs/t2v.py's argument: its text encoder is read")
    p.add_argument("--prompts", type=int, default=300, help="evaluator prompts per set (eval_prompts' order)")
    p.add_argument("--out", default="text_carryover_minilm_cpu", help="benchmarks/results/<out>.json")
    args = p.parse_args()
    t0 = time.perf_counter()
    config = t2v_configs.get_config(args.config_arg)
    encoder = load_text_encoder(config.text_encoder, config.text_encoder_path, max_length=config.text_max_length)
    texts, labels, groups = training_captions()
    x = features(encoder, texts)
    sets = {name: evaluate.eval_prompts(args.prompts, config.eval.seed, name) for name in ("template", "paraphrase")}
    x_sets = {name: features(encoder, [p["prompt"] for p in prompts]) for name, prompts in sets.items()}
    results = {}
    for k, attribute in enumerate(ATTRIBUTES):
        values = sorted({lab[k] for lab in labels})
        y = np.eye(len(values))[[values.index(lab[k]) for lab in labels]]
        ridge, cv = choose_ridge(x, y, np.asarray(groups))
        model = fit_ridge(x, y, ridge)
        row = {"values": values, "ridge": ridge, "cross_validated": cv,
               "training_captions": float((predict(model, x) == y.argmax(1)).mean())}
        for name, prompts in sets.items():
            row[name] = float(np.mean([values[i] == p[attribute] for i, p in zip(predict(model, x_sets[name]),
                                                                                  prompts)]))
        # Every ridge weight on the paraphrases too: how much the figure depends on a choice they did not make.
        row["paraphrase_by_ridge"] = {
            f"{r:g}": float(np.mean([values[i] == p[attribute] for i, p in zip(
                predict(fit_ridge(x, y, r), x_sets["paraphrase"]), sets["paraphrase"])])) for r in RIDGES}
        row["chance"] = 1.0 / len(values)
        results[attribute] = row
        print(f"{attribute}: ridge {ridge:g}, leave-one-template-out {cv[f'{ridge:g}']:.2f}, canonical "
              f"{row['template']:.2f}, paraphrase {row['paraphrase']:.2f} (chance {row['chance']:.2f}; every ridge: "
              f"{row['paraphrase_by_ridge']})", flush=True)
    bc.write_json(args.out, {
        "machine": bc.machine(), "command": "python benchmarks/text_carryover.py " + " ".join(sys.argv[1:]),
        "text_encoder": config.text_encoder, "text_max_length": config.text_max_length,
        "training_captions": len(texts), "prompts_per_set": args.prompts, "features": "token mean and token max",
        "results": results, "wall_s": time.perf_counter() - t0})


if __name__ == "__main__":
    main()
