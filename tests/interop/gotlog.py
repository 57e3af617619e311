"""Build and run `tlogcheck`, the Go verifier in tests/interop/tlogcheck, offline.

The verifier uses Go's reference libraries golang.org/x/mod/sumdb/note and .../tlog. On Debian
bookworm both come from apt (no module proxy needed):

    apt-get install -y golang-go golang-golang-x-mod-dev

which gives Go 1.19 and x/mod 0.7.0 sources under /usr/share/gocode/src. We build in GOPATH mode
(GO111MODULE=off) against that tree, with every Go setting pinned so that a user's GOFLAGS, GOENV
file, GOPROXY or cross-compilation variables cannot change the result, and nothing is fetched.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
from pathlib import Path

#: The Go source of the verifier.
TLOGCHECK_SOURCE = Path(__file__).resolve().parent / "tlogcheck" / "main.go"
#: Where Debian's golang-*-dev packages put Go sources (a GOPATH root).
DEBIAN_GOCODE = Path("/usr/share/gocode")
#: Optional override: an extra GOPATH root holding src/golang.org/x/mod.
GOPATH_ENV = "WMNODE_GOPATH"

_XMOD_FILES = ("src/golang.org/x/mod/sumdb/note/note.go", "src/golang.org/x/mod/sumdb/tlog/tlog.go")
_BUILD_TIMEOUT_S = 300
_RUN_TIMEOUT_S = 120


def find_go() -> Path | None:
    """The `go` binary: on PATH, else one of the usual install locations."""
    found = shutil.which("go")
    if found:
        return Path(found)
    for pattern in ("/usr/lib/go/bin/go", "/usr/local/go/bin/go", "/usr/lib/go-*/bin/go"):
        for candidate in sorted(glob.glob(pattern), reverse=True):
            if os.access(candidate, os.X_OK):
                return Path(candidate)
    return None


def find_xmod_gopath() -> Path | None:
    """A GOPATH root that holds the x/mod sumdb/note and sumdb/tlog sources."""
    roots: list[str] = []
    if os.environ.get(GOPATH_ENV):
        roots.append(os.environ[GOPATH_ENV])
    roots.extend(p for p in os.environ.get("GOPATH", "").split(os.pathsep) if p)
    roots.append(str(DEBIAN_GOCODE))
    for root in roots:
        if all((Path(root) / f).is_file() for f in _XMOD_FILES):
            return Path(root)
    return None


def toolchain_problem() -> str | None:
    """Why tlogcheck cannot be built here, or None when it can."""
    hint = "install them with: apt-get install -y golang-go golang-golang-x-mod-dev"
    if find_go() is None:
        return f"no Go toolchain (`go` not found); {hint}"
    if find_xmod_gopath() is None:
        return (
            f"golang.org/x/mod sources (sumdb/note, sumdb/tlog) not found under ${GOPATH_ENV}, "
            f"$GOPATH or {DEBIAN_GOCODE}; {hint}"
        )
    return None


def go_toolchain_available() -> bool:
    """True when the go binary is present and the x/mod sources are found."""
    return toolchain_problem() is None


def _build_env(workdir: Path, xmod_root: Path) -> dict[str, str]:
    # Drop every inherited Go setting (GOFLAGS, GOROOT, GOOS, GOARCH, GOPROXY, ...) and pin ours.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GO") and k != "CGO_ENABLED"}
    env.update(
        GO111MODULE="off",  # GOPATH mode: resolve golang.org/x/mod from the GOPATH, not a proxy
        GOPATH=os.pathsep.join([str(workdir / "gopath"), str(xmod_root)]),
        GOCACHE=str(workdir / "gocache"),
        GOENV="off",
        GOFLAGS="",
        GOPROXY="off",
        GOTOOLCHAIN="local",  # newer Go: never download another toolchain
        GOTELEMETRY="off",
        CGO_ENABLED="0",  # pure Go; no C compiler needed
    )
    return env


def build_tlogcheck(workdir: Path) -> Path:
    """Compile tlogcheck into `workdir` and return the binary's path."""
    problem = toolchain_problem()
    if problem is not None:
        raise RuntimeError(f"cannot build tlogcheck: {problem}")
    go, xmod_root = find_go(), find_xmod_gopath()
    assert go is not None and xmod_root is not None
    workdir = Path(workdir).resolve()
    (workdir / "gopath").mkdir(parents=True, exist_ok=True)
    binary = workdir / "tlogcheck"
    # No -trimpath: it changes every action ID, so Go 1.19 would recompile the standard library
    # (~10-17 s) instead of using the copy prebuilt in GOROOT (~1 s).
    cmd = [str(go), "build", "-o", str(binary), str(TLOGCHECK_SOURCE)]
    try:
        proc = subprocess.run(
            cmd,
            cwd=workdir,
            env=_build_env(workdir, xmod_root),
            capture_output=True,
            text=True,
            timeout=_BUILD_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"`{' '.join(cmd)}` timed out after {_BUILD_TIMEOUT_S}s") from exc
    if proc.returncode != 0 or not binary.is_file():
        raise RuntimeError(
            f"`{' '.join(cmd)}` failed (exit {proc.returncode}, GOPATH root {xmod_root}):\n{proc.stdout}{proc.stderr}"
        )
    return binary


def run_tlogcheck(binary: Path, payload: dict) -> dict:
    """Run tlogcheck on `payload` and return its JSON verdict (`{"ok": ...}`), pass or fail."""
    try:
        proc = subprocess.run(
            [str(binary)],
            input=json.dumps(payload).encode(),
            capture_output=True,
            timeout=_RUN_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"tlogcheck timed out after {_RUN_TIMEOUT_S}s") from exc
    stdout = proc.stdout.decode(errors="replace")
    stderr = proc.stderr.decode(errors="replace")
    try:
        verdict = json.loads(stdout)
    except ValueError:
        verdict = None
    if not isinstance(verdict, dict) or not isinstance(verdict.get("ok"), bool):
        raise RuntimeError(f"tlogcheck (exit {proc.returncode}) printed no JSON verdict:\n{stdout}\nstderr:\n{stderr}")
    if proc.returncode != (0 if verdict["ok"] else 1):
        raise RuntimeError(
            f"tlogcheck exit status {proc.returncode} contradicts its verdict {verdict}\nstderr:\n{stderr}"
        )
    return verdict
