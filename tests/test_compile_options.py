"""Compiler options of the train step: chosen per platform and dtype, and the same step either way."""

import jax
import jax.numpy as jnp
import numpy as np

from conftest import smoke_config
from lumiere_jax import compile_options
from lumiere_jax.diffusion.schedule import schedule_from
from lumiere_jax.state import init_model, init_state, make_optimizer
from lumiere_jax.train import jit_train_step, make_train_step


def test_options_are_asked_for_float32_on_cpu_only(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0")
    options = compile_options.train_step_options("float32", "cpu")
    assert options == {compile_options.YNN_FUSION_OPTION: compile_options.YNN_ALL_FUSIONS}
    assert compile_options.train_step_options("bfloat16", "cpu") is None
    assert compile_options.train_step_options("float32", "gpu") is None
    assert compile_options.train_step_options("float32", "tpu") is None
    # The user's own XLA_FLAGS setting of the option wins.
    monkeypatch.setenv("XLA_FLAGS", f"--{compile_options.YNN_FUSION_OPTION}=LIBRARY_FUSION_TYPE_DOT")
    assert compile_options.train_step_options("float32", "cpu") is None


def test_an_option_the_compiler_does_not_know_is_not_used():
    assert not compile_options._accepted((("xla_cpu_no_such_option_anywhere", "1"),))
    assert not compile_options._accepted(((compile_options.YNN_FUSION_OPTION, "NOT_A_FUSION_KIND"),))
    assert compile_options._accepted(((compile_options.YNN_FUSION_OPTION, compile_options.YNN_ALL_FUSIONS),))


def test_the_step_under_the_options_is_the_step_under_xla_defaults():
    config = smoke_config("")
    graphdef, params = init_model(config, 0)
    tx = make_optimizer(config)
    b, t, r = 2, config.data.num_frames, config.data.resolution
    batch = {"video": jax.random.uniform(jax.random.key(1), (b, t, r, r, 3), jnp.float32, -1.0, 1.0),
             "text": jax.random.normal(jax.random.key(2), (b, config.text_max_length, config.model.text_dim)),
             "text_mask": jnp.ones((b, config.text_max_length), bool)}
    null_text = jnp.zeros((1, config.text_max_length, config.model.text_dim))
    null_mask = jnp.arange(config.text_max_length)[None] < 2
    fresh = lambda: init_state(jax.tree.map(jnp.copy, params), tx)  # noqa: E731
    tuned = jit_train_step(graphdef, tx, schedule_from(config), config)
    plain = jax.jit(make_train_step(graphdef, tx, schedule_from(config), config))
    compiled = [step.lower(fresh(), batch, null_text, null_mask).compile() for step in (tuned, plain)]
    # The options took effect: XLA hands more of the step to YNNPACK fusions.
    fusions = [c.as_text().count("ynn_fusion") for c in compiled]
    assert fusions[0] > fusions[1], fusions
    (s1, m1), (s2, m2) = (c(fresh(), batch, null_text, null_mask) for c in compiled)
    np.testing.assert_allclose(m1["loss"], m2["loss"], rtol=1e-5)
    np.testing.assert_allclose(m1["grad_norm"], m2["grad_norm"], rtol=1e-4)
    # Adam's moments after one step are the gradient (scaled) and its square: every gradient entry agrees.
    # (The parameters would not show it: Adam's first update is lr * sign(g) for every entry, however small.)
    for a, c in zip(jax.tree.leaves(s1.opt_state), jax.tree.leaves(s2.opt_state)):
        np.testing.assert_allclose(a, c, rtol=1e-3, atol=1e-8)
