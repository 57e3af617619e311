"""The torch stack the README installs: torchvision's compiled operators load only beside the torch
build its wheel was made for, and timm builds architectures by name without touching the network."""

from __future__ import annotations

import torch


def test_torchvision_operators_load_beside_this_torch() -> None:
    import torchvision.ops

    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    keep = torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
    assert keep.tolist() == [0, 2]


def test_timm_and_torchvision_build_by_name_on_the_meta_device_offline() -> None:
    import timm
    import torchvision.models

    with torch.device("meta"):
        resnet = timm.create_model("resnet18", pretrained=False, num_classes=7)
        tv = torchvision.models.get_model("resnet18", weights=None, num_classes=7)
    assert sum(p.numel() for p in resnet.parameters()) == sum(p.numel() for p in tv.parameters())
    assert resnet.get_classifier().out_features == 7 and next(resnet.parameters()).is_meta
