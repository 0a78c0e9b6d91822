"""XLA compiler options for the train step, per platform and compute dtype, chosen by measurement.

On CPU, XLA hands dots and convolutions to the YNNPACK library one by one, and by default fuses little else
into YNNPACK kernels. Asking it for all of YNNPACK's fusion kinds (elementwise, reductions and dots fused
with their neighbours, besides single dots and convolutions) makes the float32 tiny train step 12-14%
faster on the project's 2-core CPU (1040 -> 918 ms in `benchmarks/bench_variants.py`, one process), with
the same step-0 loss, at the price of 33% more planned temporary memory (561 -> 747 MiB at batch 8: the
fused kernels keep more intermediates). For a bfloat16 model it is 8% slower (910 -> 989 ms), so it is
only asked for float32.

Options go to `jax.jit(..., compiler_options=...)`, so they apply to the steps this project compiles and
nothing else. `--config.cpu_fusions=default` turns them off; a user's own `XLA_FLAGS` setting of the same
option wins, and a jaxlib that does not know the option gets none.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import jax
import jax.numpy as jnp

YNN_FUSION_OPTION = "xla_cpu_experimental_ynn_fusion_type"
# Every fusion kind YNNPACK offers in jaxlib 0.10. XLA's default fuses less: the tiny train step compiles to
# 1,008 YNNPACK fusions by default and to 1,952 with all kinds.
YNN_ALL_FUSIONS = ",".join("LIBRARY_FUSION_TYPE_" + kind for kind in
                           ("DOT", "ELTWISE", "REDUCE", "INDIVIDUAL_DOT", "INDIVIDUAL_CONVOLUTION"))
CPU_FUSIONS = ("all", "default")  # the values of the config key `cpu_fusions`


def train_step_options(model_dtype: str, platform: str | None = None,
                       cpu_fusions: str = "all") -> dict[str, Any] | None:
    """Compiler options for a train step of a model computing in `model_dtype` (None: XLA's defaults).

    cpu_fusions (config key `cpu_fusions`): "all" asks XLA:CPU for every YNNPACK fusion kind (float32
    only), "default" leaves XLA's choice, for runs that need the memory more than the speed.
    """
    if cpu_fusions not in CPU_FUSIONS:
        raise ValueError(f"cpu_fusions={cpu_fusions!r} must be one of {CPU_FUSIONS}.")
    platform = platform or jax.default_backend()
    if platform != "cpu" or model_dtype != "float32" or cpu_fusions == "default":
        return None
    if YNN_FUSION_OPTION in os.environ.get("XLA_FLAGS", ""):
        return None  # the user chose
    options = {YNN_FUSION_OPTION: YNN_ALL_FUSIONS}
    return options if _accepted(tuple(options.items())) else None


@functools.cache
def _accepted(options: tuple[tuple[str, Any], ...]) -> bool:
    """Whether this jaxlib's CPU compiler knows the options (compiles a one-op program with them)."""
    try:
        jax.jit(lambda x: x + 1).lower(jnp.zeros((), jnp.float32)).compile(dict(options))
    except Exception:  # noqa: BLE001 - XLA reports an unknown option or value as a runtime error
        return False
    return True
