"""The zoo's built-in architectures: LeNet-5, CIFAR-style ResNet-18, VGG-16 and AlexNet, and their
passport-layer variants (registered as `NAME-passport`, for the digital passport scheme), each its
plain network with passport layers in place of its conv and FC layers.

Each class declares `wm_taps` (three early module paths a watermark head may read) and
`classifier` (the final linear layer), and is built as `cls(num_classes=..., input_shape=...)`.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from contracts.errors import ZooError
from schemes.models._passport_layer import with_passport_layers
from schemes.models.zoo import register_model


@register_model("lenet5")
class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al., 1998) with ReLU and max-pooling, as commonly trained on MNIST."""

    wm_taps: ClassVar[tuple[str, ...]] = ("block1", "block2", "block3")
    classifier: ClassVar[str] = "head"

    def __init__(self, *, num_classes: int, input_shape: tuple[int, int, int]) -> None:
        super().__init__()
        channels, height, width = input_shape
        # LeNet-5 was designed for 32×32 inputs; MNIST's 28×28 digits were centred in a 32×32
        # field, which padding 2 reproduces (so the first feature map is 28×28).
        padding = 2 if min(height, width) < 32 else 0
        side_h, side_w = _lenet_side(height, padding), _lenet_side(width, padding)
        if side_h < 1 or side_w < 1:
            raise ZooError(f"lenet5: input_shape {input_shape} is too small for two 5×5 conv + pool stages")
        self.block1 = nn.Sequential(nn.Conv2d(channels, 6, 5, padding=padding), nn.ReLU(), nn.MaxPool2d(2))
        self.block2 = nn.Sequential(nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2))
        self.block3 = nn.Sequential(nn.Flatten(), nn.Linear(16 * side_h * side_w, 120), nn.ReLU())
        self.block4 = nn.Sequential(nn.Linear(120, 84), nn.ReLU())
        self.head = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(self.block4(self.block3(self.block2(self.block1(x)))))
        return logits


def _lenet_side(size: int, padding: int) -> int:
    """Spatial size after conv5(padding) → pool2 → conv5 → pool2."""
    return ((size + 2 * padding - 4) // 2 - 4) // 2


class BasicBlock(nn.Module):
    """ResNet's two-conv residual block (He et al., 2016, Fig. 2) with a 1×1 projection shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        result: torch.Tensor = self.relu(out + self.shortcut(x))
        return result


@register_model("resnet18")
class ResNet18(nn.Module):
    """CIFAR-style ResNet-18: 3×3 stem, no max-pool, four stages of two basic blocks, global pool."""

    wm_taps: ClassVar[tuple[str, ...]] = ("stem", "layer1", "layer2")
    classifier: ClassVar[str] = "head"

    def __init__(self, *, num_classes: int, input_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(input_shape[0], 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU()
        )
        self.layer1 = _stage(64, 64, stride=1)
        self.layer2 = _stage(64, 128, stride=2)
        self.layer3 = _stage(128, 256, stride=2)
        self.layer4 = _stage(256, 512, stride=2)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        logits: torch.Tensor = self.head(self.pool(x))
        return logits


def _stage(in_channels: int, out_channels: int, *, stride: int) -> nn.Sequential:
    return nn.Sequential(BasicBlock(in_channels, out_channels, stride), BasicBlock(out_channels, out_channels, 1))


def conv_bn_relu(in_channels: int, out_channels: int, kernel: int, padding: int) -> nn.Sequential:
    """Convolution (no bias: the batch norm's shift replaces it), batch norm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, padding=padding, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


#: VGG-16's 13 convolutions (Simonyan & Zisserman, 2015, table 1 column D), by stage.
_VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


@register_model("vgg16")
class VGG16(nn.Module):
    """CIFAR-style VGG-16: 13 3×3 convolutions with batch norm in five stages, each ending in a
    2×2 max-pool (ceil mode, so 28×28 inputs also reach 1×1), global average pool, one linear layer."""

    wm_taps: ClassVar[tuple[str, ...]] = ("stage1", "stage2", "stage3")
    classifier: ClassVar[str] = "head"

    def __init__(self, *, num_classes: int, input_shape: tuple[int, int, int]) -> None:
        super().__init__()
        channels = input_shape[0]
        for i, widths in enumerate(_VGG16_STAGES, start=1):
            layers: list[nn.Module] = []
            for width in widths:
                layers.append(conv_bn_relu(channels, width, 3, 1))
                channels = width
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
            self.add_module(f"stage{i}", nn.Sequential(*layers))
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, len(_VGG16_STAGES) + 1):
            x = getattr(self, f"stage{i}")(x)
        logits: torch.Tensor = self.head(self.pool(x))
        return logits


@register_model("alexnet")
class AlexNet(nn.Module):
    """AlexNet-style network for small images (the CIFAR AlexNet of the digital passport paper):
    five convolutions (64@5×5, 192@5×5, 384, 256, 256 @3×3) with batch norm, max-pools after the
    first, second and fifth, and one linear layer on the flattened features."""

    wm_taps: ClassVar[tuple[str, ...]] = ("conv1", "conv2", "conv3")
    classifier: ClassVar[str] = "head"

    def __init__(self, *, num_classes: int, input_shape: tuple[int, int, int]) -> None:
        super().__init__()
        channels, height, width = input_shape
        if min(height, width) < 8:
            raise ZooError(f"alexnet: input_shape {input_shape} is too small for three 2×2 pools")
        self.conv1 = nn.Sequential(conv_bn_relu(channels, 64, 5, 2), nn.MaxPool2d(2))
        self.conv2 = nn.Sequential(conv_bn_relu(64, 192, 5, 2), nn.MaxPool2d(2))
        self.conv3 = conv_bn_relu(192, 384, 3, 1)
        self.conv4 = conv_bn_relu(384, 256, 3, 1)
        self.conv5 = nn.Sequential(conv_bn_relu(256, 256, 3, 1), nn.MaxPool2d(2), nn.Flatten())
        self.head = nn.Linear(256 * (height // 8) * (width // 8), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(self.conv5(self.conv4(self.conv3(self.conv2(self.conv1(x))))))
        return logits


# --------------------------------------------------------------------------------------------
# Passport-layer variants (Fan, Ng, Chan §2.3, Fig. 2): each plain network with every conv and FC
# layer except the final classifier a PassportLayer (conv/linear without bias → BN without affine →
# γ·x + β), by `with_passport_layers`. The module paths of the passport layers are those of the
# plain model's conv/linear layers, so a plain model's layer inputs at the same paths are the T2/T3
# feature-map passports (§2.4).


class _PassportVariant(nn.Module):
    """The plain network after this class in the MRO, built, then given its passport layers."""

    plain_arch: ClassVar[str]
    classifier: ClassVar[str]

    def __init__(self, *, num_classes: int, input_shape: tuple[int, int, int]) -> None:
        # The plain network's conv and FC layers are replaced: their initial draws are not spent, so
        # a seed gives the weights a network written with passport layers would have.
        with torch.random.fork_rng(devices=[]):
            super().__init__(num_classes=num_classes, input_shape=input_shape)
        with_passport_layers(self, self.classifier)


@register_model("lenet5-passport")
class LeNet5Passport(_PassportVariant, LeNet5):
    """LeNet-5 with a passport layer after both convolutions and both hidden FC layers (226
    passported channels); the classifier `head` is plain."""

    plain_arch: ClassVar[str] = "lenet5"


@register_model("resnet18-passport")
class ResNet18Passport(_PassportVariant, ResNet18):
    """ResNet-18 (CIFAR style) with every conv + BN pair a passport layer (20 of them), the 1×1
    projection shortcuts included: Fig. 2's ResNet layer."""

    plain_arch: ClassVar[str] = "resnet18"


@register_model("vgg16-passport")
class VGG16Passport(_PassportVariant, VGG16):
    """VGG-16 (CIFAR style) with each of the 13 conv + BN pairs a passport layer."""

    plain_arch: ClassVar[str] = "vgg16"


@register_model("alexnet-passport")
class AlexNetPassport(_PassportVariant, AlexNet):
    """The small-image AlexNet with all five conv + BN pairs passport layers (the authors' later
    code passports only the last three; passporting all is the paper's "each convolution")."""

    plain_arch: ClassVar[str] = "alexnet"
