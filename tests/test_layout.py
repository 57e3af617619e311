"""Imports go one way (DESIGN §3): no cycle between packages or between modules, however imported.

Every import of a project module counts: at module level, inside a function, under
`TYPE_CHECKING`. A function-level import is allowed only downward, which in an acyclic graph means
it closes no cycle. The node's log, proofs, config, serving side and client never reach `schemes`,
`mtlsign` or torch; `contracts` imports no other project package.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("contracts", "mtlsign", "schemes", "registry", "node_config")

#: Which top-level packages each may import (the floor is `contracts`).
ALLOWED = {
    "contracts": set(),
    "node_config": set(),
    "mtlsign": {"contracts"},
    "schemes": {"contracts", "mtlsign"},
    "registry": {"contracts", "mtlsign", "schemes", "node_config"},
}
#: The only parts of `registry` that may reach a model: the judge process and the CLI.
MODEL_SIDE = ("registry.judge", "registry.cli")
TORCH = ("torch", "torchvision", "timm", "safetensors.torch", "numpy")


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module (project module or third-party dotted name)
    where: str  # "module", "function" or "type_checking"
    line: int


def project_modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = project_modules()


def package_of(module: str) -> str:
    """The package a module lives in: its folder (a package's `__init__` belongs to the package)."""
    path = MODULES[module]
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _resolve(name: str, names: list[str]) -> list[str]:
    if name in MODULES:
        subs = [f"{name}.{n}" for n in names if f"{name}.{n}" in MODULES]
        return subs + ([name] if len(subs) < len(names) or not names else [])
    parts = name.split(".")
    while parts and ".".join(parts) not in MODULES:
        parts.pop()
    return [".".join(parts)] if parts else [name]


def _imports(module: str) -> Iterator[Import]:
    path = MODULES[module]
    package = package_of(module)

    def walk(node: ast.AST, where: str) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            here = "function" if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) else where
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for sub in child.body:
                    yield from one(sub, "type_checking")
                for sub in child.orelse:
                    yield from one(sub, where)
                continue
            yield from one(child, here)

    def one(child: ast.AST, where: str) -> Iterator[Import]:
        if isinstance(child, ast.Import):
            for alias in child.names:
                for target in _resolve(alias.name, []):
                    yield Import(module, target, where, child.lineno)
        elif isinstance(child, ast.ImportFrom):
            if child.level:
                base = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                name = ".".join(base + ([child.module] if child.module else []))
            else:
                name = child.module or ""
            for target in _resolve(name, [a.name for a in child.names]):
                yield Import(module, target, where, child.lineno)
        yield from walk(child, where)

    for found in walk(ast.parse(path.read_text(), str(path)), "module"):
        if found.target != module:
            yield found


IMPORTS = [i for module in sorted(MODULES) for i in _imports(module)]
INTERNAL = [i for i in IMPORTS if i.target in MODULES]


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    groups: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            strong(v)
    return groups


def _explain(group: list[str], imports: list[Import], key: str) -> str:
    inside = set(group)
    lines = [
        f"    {i.source}:{i.line} ({i.where}) -> {i.target}"
        for i in imports
        if getattr(i, key) in inside and i.target in MODULES and _key(i.target, key) in inside
    ]
    return "  " + " <-> ".join(group) + "\n" + "\n".join(lines[:20])


def _key(module: str, key: str) -> str:
    return module if key == "source" else package_of(module)


def test_scanner_sees_every_kind_of_import() -> None:
    kinds = {i.where for i in INTERNAL}
    assert kinds >= {"module", "function"}, kinds
    assert len(MODULES) > 80


def test_no_cycle_between_modules() -> None:
    edges: dict[str, set[str]] = defaultdict(set)
    for i in INTERNAL:
        edges[i.source].add(i.target)
    groups = _cycles(edges)
    assert not groups, "modules import each other:\n" + "\n".join(_explain(g, INTERNAL, "source") for g in groups)


def test_no_cycle_between_packages() -> None:
    edges: dict[str, set[str]] = defaultdict(set)
    for i in INTERNAL:
        a, b = package_of(i.source), package_of(i.target)
        if a != b:
            edges[a].add(b)
    groups = _cycles(edges)
    lines = []
    for group in groups:
        inside = set(group)
        pairs = [
            f"    {i.source}:{i.line} ({i.where}) -> {i.target}"
            for i in INTERNAL
            if package_of(i.source) in inside and package_of(i.target) in inside
            and package_of(i.source) != package_of(i.target)
        ]  # fmt: skip
        lines.append("  " + " <-> ".join(group) + "\n" + "\n".join(pairs[:30]))
    assert not groups, "packages import each other:\n" + "\n".join(lines)


def test_top_level_packages_import_only_downward() -> None:
    wrong = [
        f"{i.source}:{i.line} ({i.where}) -> {i.target}"
        for i in INTERNAL
        if i.target.split(".")[0] != i.source.split(".")[0]
        and i.target.split(".")[0] not in ALLOWED[i.source.split(".")[0]]
    ]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("part", ["contracts", "registry.proofs", "registry.log", "registry.community",
                                  "registry.serve", "registry.client"])  # fmt: skip
def test_the_node_never_reaches_a_model(part: str) -> None:
    """The node's log, proofs, config, API and client import neither `schemes`/`mtlsign` nor torch."""
    wrong = [
        f"{i.source}:{i.line} ({i.where}) -> {i.target}"
        for i in IMPORTS
        if (i.source == part or i.source.startswith(part + "."))
        and (i.target.split(".")[0] in ("schemes", "mtlsign") or i.target.startswith(TORCH))
    ]
    assert not wrong, "\n".join(wrong)


def test_model_side_is_only_the_judge_and_the_cli() -> None:
    wrong = [
        f"{i.source}:{i.line} ({i.where}) -> {i.target}"
        for i in INTERNAL
        if i.source.startswith("registry") and i.target.split(".")[0] in ("schemes", "mtlsign")
        and not i.source.startswith(MODEL_SIDE)
    ]  # fmt: skip
    assert not wrong, "\n".join(wrong)


def test_a_cycle_is_found() -> None:
    """The cycle finder itself: a two-node loop and a three-node loop, beside a chain."""
    edges = {"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c"}, "f": {"g"}}
    assert _cycles(edges) == [["a", "b"], ["c", "d", "e"]]
