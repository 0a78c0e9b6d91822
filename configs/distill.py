r"""Fast sampling by distillation: a student of a trained run that samples in a few steps of one model call each.

A trained run samples in 25-50 DDIM steps of two model calls (classifier-free guidance). First a guidance-conditioned
student (one call gives the guided prediction; the guidance weight is an input), then rounds that halve its steps,
each in its own workdir and each an ordinary resumable training run (lumiere_jax/distill.py):

  python -m lumiere_jax.main --config=configs/distill.py --workdir=runs/distill_g --config.init_from=runs/t2v_tiny
  python -m lumiere_jax.main --config=configs/distill.py --workdir=runs/distill_16 \
      --config.init_from=runs/distill_g --config.distill.steps=16
  python -m lumiere_jax.main --config=configs/distill.py --workdir=runs/distill_8 \
      --config.init_from=runs/distill_16 --config.distill.steps=8
  python -m lumiere_jax.main --config=configs/distill.py --workdir=runs/distill_4 \
      --config.init_from=runs/distill_8 --config.distill.steps=4
  python -m lumiere_jax.main --config=configs/distill.py --workdir=runs/distill_4 --mode=sample \
      --prompt="a red circle moving left" --out=clip.gif --config.sample.steps=4 --config.sample.guidance=3

The student's model is the teacher's plus the guidance embedding, and its clip size, text encoder and noise schedule
are the teacher's: they are read from init_from's config.json when the run starts, so this file's model section
does not matter. A round's student samples in exactly distill.steps steps; its teacher is the previous round (or the
guidance-conditioned student, which samples at any count) at twice as many. Sampling a distilled run at another step
count, or at a guidance weight outside [guidance_min, guidance_max], is refused in one line.

Variants: `size=smoke|tiny|small|lumiere` (the loop of each stage; the teacher's own size decides the model) and
`teacher=t2v` (text-to-video or text-to-image runs) or `teacher=ssr` (configs/ssr.py runs: no guidance at sampling,
so their guidance range is [1, 1] and each round's teacher is one call a step).
"""

import ml_collections

from configs import ssr, t2v
from lumiere_jax import config_lib

# name: (training steps of each stage, learning rate, warmup steps)
SIZES = {
    "smoke": (4, 1e-4, 0),
    # On a 2-core CPU each stage's step costs about two of the teacher's (its student's pass and the teacher's).
    "tiny": (1000, 2e-4, 100),
    "small": (10_000, 1e-4, 500),
    "lumiere": (50_000, 5e-5, 1000),  # Salimans & Ho train each halving 50k steps at a lower rate than the teacher
}
TEACHERS = {"t2v": t2v, "ssr": ssr}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the locked config; `arg` is `key=value,...` with keys `size` and `teacher`."""
    args = config_lib.parse_arg(arg, size="tiny", teacher="t2v")
    if args.teacher not in TEACHERS:
        raise ValueError(f"configs/distill.py: teacher={args.teacher!r} is not one of {sorted(TEACHERS)}.")
    sizes = [s for s in SIZES if s in TEACHERS[args.teacher].SIZES]
    if args.size not in sizes:
        raise ValueError(f"configs/distill.py: size={args.size!r} is not one of {sizes} for teacher={args.teacher}.")
    steps, learning_rate, warmup = SIZES[args.size]

    c = TEACHERS[args.teacher].get_config(f"size={args.size}")
    c.unlock()
    c.total_steps = steps
    c.model.guidance_embedding = True
    # Every time alike (the teacher's recipe may weight some noise levels), a constant rate: a student learns
    # a fixed teacher, not the data.
    c.diffusion.high_noise_fraction = 0.0
    c.diffusion.high_noise_until = 0
    c.diffusion.high_noise_fraction_after = 0.0
    c.diffusion.t_max = 1.0
    c.optim.learning_rate = learning_rate
    c.optim.warmup_steps = warmup
    c.optim.decay_steps = 0
    c.optim.decay_start = 0
    # The student never runs on the empty caption (the guidance weight is its input, not a second call): every
    # clip trains the captioned prediction.
    c.data.text_dropout = 0.0
    if c.sample_every:
        c.sample_every = steps
    # One call a step gives the guided prediction: there is no conditional prediction apart to rescale toward.
    c.sample.guidance_rescale = 0.0

    c.distill = ml_collections.ConfigDict()
    # 0: the guidance-conditioned student (Meng et al. stage one); N > 0: a round whose student samples in N steps,
    # one for every two of init_from's (Salimans & Ho).
    c.distill.steps = 0
    # The guidance weights the student learns, one drawn per clip: sampling takes any weight in this range. A
    # round's range lies within its teacher's.
    c.distill.guidance_min = 1.0
    c.distill.guidance_max = 1.0 if args.teacher == "ssr" else 4.0
    # The teacher's checkpoint: -1, its newest when the run starts (kept in config.json, so a resume keeps it).
    c.distill.teacher_step = -1
    return config_lib.lock(c)
