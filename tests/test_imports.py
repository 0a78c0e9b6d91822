"""The package's imports point one way: no cycle, no module importing a layer above its own, and imports inside
functions only for optional heavy dependencies. Reads the source (tools/import_graph.py); nothing is imported."""

from __future__ import annotations

import pytest

from tools import import_graph

# Bottom to top. A module may import its own layer and the layers below it. Patterns match a module or, ending
# in ".", a package and every module in it.
LAYERS = (
    ("lumiere_jax", "lumiere_jax.console", "lumiere_jax.paths", "lumiere_jax.run_lock", "lumiere_jax.sharding",
     "lumiere_jax.compile_options", "lumiere_jax.host_memory", "lumiere_jax.video_io", "lumiere_jax.checkpointing", "lumiere_jax.models.",
     "lumiere_jax.diffusion.", "lumiere_jax.text.", "lumiere_jax.data.", "lumiere_jax.eval.",
     "lumiere_jax.peers", "lumiere_jax.supervise", "lumiere_jax.memory_check"),
    ("lumiere_jax.config_lib",),
    ("lumiere_jax.conditioning.",),
    ("lumiere_jax.state",),
    ("lumiere_jax.runs", "lumiere_jax.shipped", "lumiere_jax.inflate", "lumiere_jax.distill"),
    ("lumiere_jax.sampling", "lumiere_jax.train"),
    ("lumiere_jax.ssr", "lumiere_jax.applications.", "lumiere_jax.aot",
     "lumiere_jax.evaluate"),
    ("lumiere_jax.commands",),
    ("lumiere_jax.main", "lumiere_jax.prepare", "lumiere_jax.demo"),
)
# Third-party modules that may be imported inside a function: heavy and needed by one optional path only.
LAZY_ALLOWED = {
    "transformers",  # seconds to import; only T5's tokenizer needs it
    "apache_beam",  # an optional extra ("beam"); only preparing a video source on Beam needs it
}


def layer_of(module: str) -> int:
    found = [i for i, patterns in enumerate(LAYERS)
             for p in patterns if module == p.rstrip(".") or (p.endswith(".") and module.startswith(p))]
    if not found:
        raise AssertionError(f"{module} is in no layer of tests/test_imports.py: add it where it belongs.")
    return max(found)


@pytest.fixture(scope="module")
def edges():
    return import_graph.imports()


def test_no_cycle(edges):
    assert import_graph.cycles(import_graph.graph(edges)) == []


def test_cycle_finder_finds_cycles():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert import_graph.cycles(g) == [["a", "b", "c"]]


def test_no_module_imports_a_layer_above_its_own(edges):
    upward = [f"{e.source}:{e.line} imports {e.target}" for e in edges if e.target.startswith("lumiere_jax")
              and layer_of(e.target) > layer_of(e.source)]
    assert upward == []


def test_every_module_has_a_layer():
    for module in import_graph.modules():
        layer_of(module)


def test_imports_inside_functions_only_for_optional_heavy_dependencies(edges):
    inner = [f"{e.source}:{e.line} imports {e.target}" for e in edges
             if e.in_function and e.target.split(".")[0] not in LAZY_ALLOWED]
    assert inner == []


def test_the_old_cycle_would_be_caught(tmp_path):
    """The graph reader sees imports inside functions: the cycle sampling -> state -> tasks -> ssr -> sampling ran
    through three of them."""
    pkg = tmp_path / "lumiere_jax"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "sampling.py").write_text("def f():\n    from lumiere_jax import state\n")
    (pkg / "state.py").write_text("def g():\n    from lumiere_jax import tasks  # the task modules import this one\n")
    (pkg / "tasks.py").write_text("def h():\n    from lumiere_jax import ssr\n")
    (pkg / "ssr.py").write_text("from lumiere_jax import sampling\n")
    edges = import_graph.imports(str(pkg))
    assert import_graph.cycles(import_graph.graph(edges)) == [
        ["lumiere_jax.sampling", "lumiere_jax.ssr", "lumiere_jax.state", "lumiere_jax.tasks"]]
    assert sum(e.in_function for e in edges) == 3
