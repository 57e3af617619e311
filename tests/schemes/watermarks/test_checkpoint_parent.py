"""MTLSign on an open architecture whose parent checkpoint the community admitted (issue 18, D3).

A head reads a network's first stages, and fine-tuning a public checkpoint barely moves them: a
squatter who fits a head for its own key to the parent's taps passes on anyone's fine-tune of that
parent. The judge runs every claim on the admitted checkpoints of the suspect's architecture too,
so the parent passes the squatter's head and the vote is `not-owner`; the fine-tune's honest owner,
whose head was trained with a backbone that moved, is `owner` against the same reference.
The architecture is timm's `test_resnet` (a small ResNet of timm's own), so the test runs in minutes.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from mtlsign.dwm import build_dwm
from mtlsign.head import WatermarkHead, pooled, tap_features
from mtlsign.verify import DEFAULT_GAMMA, WatermarkInfo
from registry.judge import process as judging
from schemes.data.dataset import Dataset
from schemes.data.datasets import load_dataset
from schemes.models.zoo import ModelCard, model_to_bytes, wm_taps
from schemes.training.loops import accuracy, batches, train_classifier
from schemes.watermarks import mtlsign
from tests.schemes.watermarks.test_null_on_suspect import write_job

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

ARCH, SHAPE = "timm:test_resnet", (3, 32, 32)
OWNER_KEY = hashlib.sha256(b"checkpoint parent: the fine-tune's owner").digest()
SQUATTER_KEY = hashlib.sha256(b"checkpoint parent: the squatter").digest()
N, HIDDEN, POOL = 600, 256, 4  # the community's floor N; the default head


def _parent(data: Dataset) -> tuple[nn.Module, ModelCard]:
    """The 'public checkpoint': a small timm ResNet trained on the digits."""
    card = ModelCard(ARCH, data.num_classes, SHAPE, tuple(data.mean), tuple(data.std))
    torch.manual_seed(0)
    model = train_classifier(card.build(), data.x_train, data.y_train, epochs=4, lr=1e-3, batch_size=64,
                             generator=torch.Generator().manual_seed(0))  # fmt: skip
    return model.eval(), card


def _fit_head(parent: nn.Module, data: Dataset, key: bytes) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The squatter's cWM for its own key's D_WM over the parent's frozen taps (no co-training)."""
    taps = wm_taps(parent, SHAPE)
    info = WatermarkInfo(N, DEFAULT_GAMMA, taps, POOL, HIDDEN, SHAPE, tuple(data.mean), tuple(data.std))
    dwm = build_dwm(key, N, SHAPE, data.mean, data.std)
    with torch.no_grad():
        features = torch.cat([pooled(t, POOL) for t in tap_features(parent.eval(), taps, dwm.x)[1]], dim=1)
    generator = torch.Generator().manual_seed(0)
    head = WatermarkHead(features.shape[1], HIDDEN, POOL)
    optimiser = torch.optim.Adam(head.parameters(), lr=1e-3)
    head.train()
    for _ in range(300):
        for index in batches(N, 64, generator):
            loss = nn.functional.cross_entropy(head.net(features[index]), dwm.y[index])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
    return {k: v.detach().contiguous() for k, v in head.state_dict().items()}, info.to_json()


def _job(tmp: Path, suspect: nn.Module, card: ModelCard, key: bytes, head: dict[str, torch.Tensor],
         info: dict[str, Any], references: list[dict[str, str]]) -> dict[str, Any]:  # fmt: skip
    tmp.mkdir(parents=True, exist_ok=True)
    job = write_job(tmp, suspect, card, info, key, references=references)
    save_file(head, job["verifier_path"])
    Path(job["info_path"]).write_text(json.dumps(info))
    return job


def test_a_head_fitted_to_the_parent_loses_on_a_fine_tune_and_the_fine_tunes_owner_wins(tmp_path: Path) -> None:
    data = load_dataset("digits", input_shape=SHAPE)
    parent, card = _parent(data)
    parent_bytes = model_to_bytes(parent, card)
    parent_path = tmp_path / "parent.safetensors"
    parent_path.write_bytes(parent_bytes)
    reference = {"model_hash": hashlib.sha256(parent_bytes).hexdigest(), "path": str(parent_path)}

    # The honest owner fine-tunes the parent with MTLSign (its fine-tuning budget).
    config = replace(mtlsign.Config(), n=N, embed_epochs=12, lambda_da=0.0, lr=3e-4)
    marked = mtlsign.embed(copy.deepcopy(parent).train(), data, OWNER_KEY, config, clean=parent)
    fine_tune = marked.model.eval()
    print(f"parent accuracy {accuracy(parent, data.x_test, data.y_test):.3f}; fine-tune "
          f"{marked.report['accuracy']:.3f}, watermark {marked.report['wm_score']:.3f}")  # fmt: skip
    assert marked.report["wm_score"] >= 0.9

    # The squatter fits a head for its own key to the parent and claims fine-tunes of it: a plain
    # one by a third party (the attack works with the check off), and the owner's.
    head, info = _fit_head(parent, data, SQUATTER_KEY)
    plain = train_classifier(copy.deepcopy(parent).train(), data.x_train, data.y_train, epochs=2, lr=3e-4,
                             batch_size=64, generator=torch.Generator().manual_seed(1)).eval()  # fmt: skip
    off = judging.judge(_job(tmp_path / "off", plain, card, SQUATTER_KEY, head, info, []))
    on = judging.judge(_job(tmp_path / "on", plain, card, SQUATTER_KEY, head, info, [reference]))
    theirs = judging.judge(_job(tmp_path / "theirs", fine_tune, card, SQUATTER_KEY, head, info, [reference]))
    print("squatter on a plain fine-tune, no reference:", off["verdict"], off["reason"][:200])
    print("squatter on a plain fine-tune, parent admitted:", on["verdict"], on["reason"][:200])
    print("squatter on the owner's fine-tune, parent admitted:", theirs["verdict"], theirs["reason"][:200])
    assert off["verdict"] == "owner", off  # the attack, with the check switched off
    for vote in (on, theirs):
        assert vote["verdict"] == "not-owner" and vote["references"] == [reference["model_hash"]], vote

    honest = judging.judge(_job(tmp_path / "honest", fine_tune, card, OWNER_KEY, marked.verifier, marked.info,
                                [reference]))  # fmt: skip
    print("owner, parent admitted:", honest["verdict"], honest["reason"][:200])
    assert honest["verdict"] == "owner" and honest["references"] == [reference["model_hash"]], honest
