r"""Prints which caption words a trained text-to-video run uses (lumiere_jax/eval/text_probe.py).

  python -m tools.text_probe --t2v=runs/t2v_tiny [--size=tiny --num=32 --step=N --out=probe.json]

For each noise level: loss with the clip's own caption, with the empty caption, and the increase when the
colour, shape or motion word is swapped. A column of ~0 means the model ignores that word.
"""

from __future__ import annotations

import json

from absl import app, flags

_T2V = flags.DEFINE_string("t2v", None, "A configs/t2v.py run (its workdir).", required=True)
_SIZE = flags.DEFINE_string("size", "tiny", "Config size of the run.")
_NUM = flags.DEFINE_integer("num", 32, "Probe clips (directions cycled).")
_OUT = flags.DEFINE_string("out", None, "Write the numbers as JSON here.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step to probe (default: the newest).")


def main(argv) -> None:
    del argv
    from configs import t2v as t2v_config
    from lumiere_jax import sampling
    from lumiere_jax.eval import text_probe
    from lumiere_jax.runs import with_run_model

    config = with_run_model(t2v_config.get_config(f"size={_SIZE.value}"), _T2V.value)
    t2v, step = sampling.load_text_to_video(config, _T2V.value, _STEP.value)
    clips, attrs = text_probe.probe_clips(_NUM.value, config.data.num_frames, config.data.resolution)
    out = text_probe.text_gaps(t2v.graphdef, t2v.params, t2v.encoder, t2v.schedule, clips, attrs)
    print(f"{_T2V.value} step {step}, {_NUM.value} clips: v-loss with the right caption, and its increase "
          f"when one word is swapped")
    print(f"{'t':>5} {'logsnr':>7} {'right':>7} {'null':>7} {'colour+':>8} {'shape+':>8} {'motion+':>8}")
    for i, t in enumerate(out["t"]):
        print(f"{t:5.2f} {out['logsnr'][i]:+7.2f} {out['right'][i]:7.4f} {out['null'][i]:7.4f} "
              f"{out['color_gap'][i]:+8.4f} {out['shape_gap'][i]:+8.4f} {out['motion_gap'][i]:+8.4f}")
    if _OUT.value:
        with open(_OUT.value, "w") as f:
            json.dump({"workdir": _T2V.value, "step": step, "num": _NUM.value, **out}, f, indent=2)


if __name__ == "__main__":
    app.run(main)
