"""Joint training on weighted sources: every step's batch comes whole from one source, drawn by weight.

    weights = parse_mixture("videos:0.7,images:0.3")          # {"videos": 0.7, "images": 0.3}
    ds = mixture_dataset({"videos": video_batches, "images": image_batches}, weights, seed=0, num_steps=1000)
    batch = ds[k]                                             # step k's batch, from the source plan[k] names

Imagen Video and Phenaki train on image-text pairs beside video-text pairs; here an image batch holds
single-frame clips [B, 1, H, W, C] that the STUNet runs with its temporal layers bypassed (`images=True`), so
each source keeps its own compiled train step. The plan (which source each step reads) is a function of the seed
and the step alone, and each source's batches are read in order: a resumed run reads exactly the batches an
uninterrupted one would have.
"""

from __future__ import annotations

from typing import Any, Mapping

import grain
import numpy as np

IMAGES = "images"  # the name of the image source in data.mixture


def parse_mixture(spec: str, names: tuple[str, ...] = ()) -> dict[str, float]:
    """"name:weight,name:weight" -> {name: weight / sum}, in the order given; "" -> {}.

    names: the sources the run can read (empty: any). Raises ValueError, one line naming the value and the form.
    """
    form = "give name:weight pairs, e.g. data.mixture='videos:0.7,images:0.3'"
    if not spec.strip():
        return {}
    weights: dict[str, float] = {}
    for part in spec.split(","):
        name, sep, value = part.partition(":")
        name = name.strip()
        try:
            weight = float(value) if sep else float("nan")
        except ValueError:
            weight = float("nan")
        if not name or not np.isfinite(weight) or weight <= 0:
            raise ValueError(f"data.mixture={spec!r}: {part.strip()!r} is not name:positive_weight; {form}.")
        if name in weights:
            raise ValueError(f"data.mixture={spec!r} names {name!r} twice; {form}.")
        if names and name not in names:
            raise ValueError(f"data.mixture={spec!r}: {name!r} is not a source of this run; use "
                             f"{' or '.join(repr(n) for n in names)}.")
        weights[name] = weight
    if len(weights) < 2:
        raise ValueError(f"data.mixture={spec!r} names one source; {form}, or leave it empty to read data.dataset "
                         f"alone.")
    total = sum(weights.values())
    return {n: w / total for n, w in weights.items()}


def plan(weights: Mapping[str, float], seed: int, num_steps: int) -> np.ndarray:
    """The source index (into list(weights)) of each of num_steps steps: i.i.d. draws by weight."""
    rng = np.random.default_rng([seed, 0x6D6978])  # its own stream: independent of the data shuffles' seed use
    return rng.choice(len(weights), size=num_steps, p=np.asarray(list(weights.values()), np.float64))


def mixture_dataset(batches: Mapping[str, grain.MapDataset], weights: Mapping[str, float], *, seed: int,
                    num_steps: int) -> grain.MapDataset:
    """A MapDataset of num_steps batches: element k is the next unread batch of the source that step k draws.

    batches: per source, its infinite dataset of batches (pipeline.train_dataset); keys as in weights.
    """
    names = list(weights)
    if set(batches) != set(names):
        raise ValueError(f"sources {sorted(batches)} do not match the mixture's {names}.")
    which = plan(weights, seed, num_steps)
    rank = np.zeros(num_steps, np.int64)  # how many earlier steps read the same source
    for i in range(len(names)):
        steps = which == i
        rank[steps] = np.arange(int(steps.sum()))
    streams = [batches[n] for n in names]

    def read(step: Any) -> dict[str, np.ndarray]:
        return streams[which[step]][int(rank[step])]

    return grain.MapDataset.range(num_steps).map(read)
