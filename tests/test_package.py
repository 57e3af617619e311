"""Package-level rules: sorted public names, one-way dependencies, lint and types."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["contracts", "registry", "mtlsign", "schemes", "node_config"]
#: Every module the node process imports: none of them may pull in the ML stack.
NODE_SIDE = ["contracts", "registry.proofs", "registry.log", "registry.community", "registry.serve", "registry.client"]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_sorted_and_real(name: str) -> None:
    module = importlib.import_module(name)
    names = list(module.__all__)
    assert names == sorted(names)
    missing = [n for n in names if not hasattr(module, n)]
    assert missing == []


def test_the_registry_never_imports_the_ml_stack() -> None:
    """STYLE §3: the node's log and API stay light; verification reaches schemes through a registry."""
    code = (
        "import importlib, pkgutil, sys, registry, registry.cli\n"
        f"for name in {NODE_SIDE!r}:\n"
        "    package = importlib.import_module(name)\n"
        "    for info in pkgutil.walk_packages(package.__path__, name + '.'):\n"
        "        importlib.import_module(info.name)\n"
        "heavy = sorted(m for m in ('torch', 'schemes', 'mtlsign', 'numpy') if m in sys.modules)\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == ""


def test_importing_touches_nothing(tmp_path: Path) -> None:
    """STYLE §14: importing every module writes no file and starts no thread."""
    code = (
        "import threading, registry, registry.serve.api, registry.cli, registry.serve.node, registry.log.state\n"
        "import registry.client.localnet, contracts.infos\n"
        "print(threading.active_count())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.strip() == "1"
    assert list(tmp_path.iterdir()) == []


def run_tool(tool: list[str]) -> None:
    """Run a dev tool from this interpreter's environment in the repository root; it must pass."""
    exe = shutil.which(tool[0], path=str(Path(sys.executable).parent))
    assert exe is not None, f"{tool[0]} is not installed beside {sys.executable} (pip install -e '.[dev]')"
    result = subprocess.run([exe, *tool[1:]], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("tool", [["ruff", "check", "."], ["ruff", "format", "--check", "."]])
def test_lint(tool: list[str]) -> None:
    """About a second each: in the default suite, so a lint slip fails the run that introduced it."""
    run_tool(tool)


@pytest.mark.slow
def test_types() -> None:
    """mypy takes a minute or more on 2 cores: `.ci/run` runs it right after the default suite."""
    run_tool(["mypy"])
