"""The package's import graph: which lumiere_jax module imports which, its cycles, and imports inside functions.

    python tools/import_graph.py            # edges, cycles, in-function imports
    python tools/import_graph.py --dot      # Graphviz dot of the module graph

Reads the source with `ast` (nothing is imported), so it runs without jax. tests/test_imports.py asserts on the
same functions: no cycle, no module importing one in a layer above it, and in-function imports only of optional
heavy dependencies.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import os
import sys

PACKAGE = "lumiere_jax"
ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), PACKAGE)


@dataclasses.dataclass(frozen=True)
class Import:
    source: str  # importing module, e.g. "lumiere_jax.sampling"
    target: str  # imported module or package, e.g. "lumiere_jax.diffusion.samplers", or "PIL"
    line: int
    in_function: bool


def modules(root: str = ROOT) -> dict[str, str]:
    """{dotted module name: file path} of every .py file under the package."""
    out = {}
    for folder, _, files in os.walk(root):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, os.path.dirname(root))[:-3].replace(os.sep, ".")
                out[rel.removesuffix(".__init__")] = path
    return out


def _resolve(name: str, known: dict[str, str]) -> str:
    """The longest known module that `name` (a.b.c, possibly an attribute of a module) starts with."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in known:
            return candidate
    return name


def imports(root: str = ROOT) -> list[Import]:
    """Every import statement of the package, with its target resolved to a module where it is one of ours."""
    known = modules(root)
    out = []
    for module, path in known.items():
        tree = ast.parse(open(path, encoding="utf-8").read(), path)
        package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
        functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        nested = {id(n) for f in functions for n in ast.walk(f) if n is not f}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                names = [f"{base}.{a.name}" if base else a.name for a in node.names]
                if not base.startswith(PACKAGE):
                    names = [base]
            else:
                continue
            for name in names:
                target = _resolve(name, known) if name.startswith(PACKAGE) else name.split(".")[0]
                if target != module:
                    out.append(Import(module, target, node.lineno, id(node) in nested))
    return sorted(set(out), key=lambda i: (i.source, i.line, i.target))


def graph(edges: list[Import]) -> dict[str, set[str]]:
    """{module: modules of the package it imports}, from every import, in functions or not."""
    g: dict[str, set[str]] = {}
    for e in edges:
        g.setdefault(e.source, set())
        if e.target.startswith(PACKAGE):
            g[e.source].add(e.target)
    return g


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of the graph: one per strongly connected component of more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dot", action="store_true", help="print a Graphviz dot graph instead")
    args = parser.parse_args()
    edges = imports()
    g = graph(edges)
    if args.dot:
        print("digraph lumiere_jax {")
        for source in sorted(g):
            for target in sorted(g[source]):
                print(f'  "{source.removeprefix(PACKAGE + ".")}" -> "{target.removeprefix(PACKAGE + ".")}";')
        print("}")
        return
    short = lambda m: m.removeprefix(PACKAGE + ".")  # noqa: E731
    print(f"{len(g)} modules, {sum(len(t) for t in g.values())} internal import edges")
    for source in sorted(g):
        if g[source]:
            print(f"  {short(source)} -> {', '.join(short(t) for t in sorted(g[source]))}")
    found = cycles(g)
    print(f"cycles: {len(found)}")
    for c in found:
        print("  " + " <-> ".join(short(m) for m in c))
    inner = [e for e in edges if e.in_function]
    print(f"imports inside functions: {len(inner)} in {len({e.source for e in inner})} files")
    for e in inner:
        print(f"  {short(e.source)}:{e.line} imports {short(e.target)}")


if __name__ == "__main__":
    main()
