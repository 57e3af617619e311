"""Long embeddings that survive (DESIGN §4.7): a checkpoint after every epoch of every training loop,
and `--resume` to continue from the last one after a crash, a kill or a reboot.

A scheme names each of its loops (`epochs("mtlsign/embed", total, state)`) and hands over what the
loop changes: modules, optimisers, generators, tensors, lists and dicts of tensors. While an embedding
runs under `checkpoints(directory)`, each loop first restores its last saved state (a finished loop
restores its final state and runs no epoch), and saves its state after every epoch; without a
checkpoint directory a loop is a plain `range`. A run resumed from the same command, nonce and data
therefore gives the same model as one that was never interrupted.

Files: `<directory>/<loop>.safetensors`, one per loop, each written to a temporary name and renamed
over the old one, so a kill leaves the previous epoch's file whole. Tensors are safetensors; the
epoch, optimiser settings and scalars are JSON in its metadata. Nothing is pickled. Under torchrun,
rank 0 alone writes, and every rank reads.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator, Mapping, MutableMapping, MutableSequence
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import nn

from contracts.errors import WmnodeError

__all__ = ["ResumeError", "checkpoints", "epochs"]

_NAME = re.compile(r"[a-z0-9][a-z0-9_./-]{0,63}")
_ACTIVE: list[Path] = []


class ResumeError(WmnodeError):
    """A checkpoint that does not fit the run resuming it, or one that cannot be read."""

    http_status = 400


@contextlib.contextmanager
def checkpoints(directory: Path) -> Iterator[Path]:
    """Checkpoint every named loop into `directory` while the block runs."""
    directory.mkdir(parents=True, exist_ok=True)
    _ACTIVE.append(directory)
    try:
        yield directory
    finally:
        _ACTIVE.remove(directory)


def _rank() -> int:
    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def barrier() -> None:
    """Wait for every rank (nothing to wait for in one process)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def epochs(name: str, total: int, state: Mapping[str, Any], device: torch.device | None = None) -> Iterator[int]:
    """The epochs of loop `name` still to run; `state` is restored from its checkpoint first (lists
    and dicts of tensors onto `device`), and saved after every epoch the caller finishes (when the
    caller asks for the next one)."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"bad loop name {name!r}")
    if not _ACTIVE:
        yield from range(total)
        return
    file = _ACTIVE[-1] / f"{name.replace('/', '.')}.safetensors"
    start = _restore(file, name, total, state, device or torch.device("cpu")) if file.is_file() else 0
    for epoch in range(start, total):
        yield epoch
        if _rank() == 0:
            _save(file, name, epoch + 1, total, state)
        barrier()


# --------------------------------------------------------------------------------------------
# State to and from tensors + JSON


def _flatten(state: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {}
    for key, obj in state.items():
        if isinstance(obj, nn.Module):
            tensors.update({f"{key}/{k}": v for k, v in obj.state_dict().items()})
            meta[key] = "module"
        elif isinstance(obj, torch.optim.Optimizer):
            saved = obj.state_dict()
            scalars: dict[str, dict[str, Any]] = {}
            for index, entry in saved["state"].items():
                for k, v in entry.items():
                    if isinstance(v, torch.Tensor):
                        tensors[f"{key}/state/{index}/{k}"] = v
                    else:
                        scalars.setdefault(str(index), {})[k] = v
            meta[key] = {"optimiser": saved["param_groups"], "scalars": scalars}
        elif isinstance(obj, torch.Generator):
            tensors[key] = obj.get_state()
            meta[key] = "generator"
        elif isinstance(obj, torch.Tensor):
            tensors[key] = obj
            meta[key] = "tensor"
        elif isinstance(obj, MutableSequence):  # a list of dicts of tensors (MTLSign's shifts)
            for i, item in enumerate(obj):
                tensors.update({f"{key}/{i}/{k}": v for k, v in item.items()})
            meta[key] = {"list": len(obj)}
        elif isinstance(obj, MutableMapping):  # tensors and JSON scalars by name
            held = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
            tensors.update({f"{key}/{k}": v for k, v in held.items()})
            meta[key] = {"dict": sorted(held), "scalars": {k: v for k, v in obj.items() if k not in held}}
        else:
            raise TypeError(f"cannot checkpoint {key!r}: {type(obj).__name__}")
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}, meta


def _save(file: Path, name: str, epoch: int, total: int, state: Mapping[str, Any]) -> None:
    tensors, meta = _flatten(state)
    header = {"wmnode.resume": json.dumps({"loop": name, "epoch": epoch, "total": total, "state": meta})}
    tmp = file.with_name(file.name + ".tmp")
    tmp.write_bytes(safetensors.torch.save(tensors, metadata=header))
    os.replace(tmp, file)


def _restore(file: Path, name: str, total: int, state: Mapping[str, Any], device: torch.device) -> int:
    try:
        with safetensors.safe_open(str(file), framework="pt") as handle:
            header = json.loads((handle.metadata() or {})["wmnode.resume"])
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118  # safe_open has no __iter__
    except (OSError, ValueError, KeyError, safetensors.SafetensorError) as exc:
        raise ResumeError(f"cannot read the checkpoint {file}: {exc}") from exc
    if header.get("loop") != name or header.get("total") != total or set(header.get("state", {})) != set(state):
        raise ResumeError(
            f"the checkpoint {file} is of another run (loop {header.get('loop')!r} of {header.get('total')} "
            f"epochs, not {name!r} of {total}): resume with the command that started it"
        )
    try:
        for key, obj in state.items():
            _load(key, obj, header["state"][key], tensors, device)
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise ResumeError(f"the checkpoint {file} does not fit this run: {exc}") from exc
    return int(header["epoch"])


def _load(key: str, obj: Any, meta: Any, tensors: Mapping[str, torch.Tensor], device: torch.device) -> None:
    prefix = f"{key}/"
    mine = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    if isinstance(obj, nn.Module):
        obj.load_state_dict(mine, strict=True)
    elif isinstance(obj, torch.optim.Optimizer):
        entries: dict[int, dict[str, Any]] = {}
        for k, v in mine.items():
            _, index, field = k.split("/", 2)
            entries.setdefault(int(index), {})[field] = v
        for index, scalars in meta["scalars"].items():
            entries.setdefault(int(index), {}).update(scalars)
        obj.load_state_dict({"state": entries, "param_groups": meta["optimiser"]})
    elif isinstance(obj, torch.Generator):
        obj.set_state(tensors[key])
    elif isinstance(obj, torch.Tensor):
        with torch.no_grad():
            obj.copy_(tensors[key])
    elif isinstance(obj, MutableSequence):
        items: list[dict[str, torch.Tensor]] = [{} for _ in range(meta["list"])]
        for k, v in mine.items():
            i, field = k.split("/", 1)
            items[int(i)][field] = v
        obj[:] = [{f: v.to(device) for f, v in item.items()} for item in items]
    elif isinstance(obj, MutableMapping):
        obj.clear()
        obj.update({k: mine[k].to(device) for k in meta["dict"]})
        obj.update(meta["scalars"])
