"""Training throughput of a ResNet-18 at 32×32, images/s, on the CPU and (when there is one) on CUDA
with bf16 autocast, side by side in one run, through the schemes' own loop (`schemes.training`).

Synthetic in-memory images (10 classes), Adam, batch 128; a warm-up, then timed steps.
Run: python benchmarks/train_throughput.py [--arch timm:resnet18 --steps 20 --batch 128]
"""

from __future__ import annotations

import argparse
import time

import torch

from schemes.models.zoo import create_model
from schemes.training.loops import Labelled, autocast, step, stream


def images_per_second(arch: str, device: torch.device, steps: int, batch: int) -> float:
    torch.manual_seed(0)
    model = create_model(arch, num_classes=10, input_shape=(3, 32, 32)).to(device).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.randn(batch * (steps + 3), 3, 32, 32), torch.arange(batch * (steps + 3)) % 10
    done, started = 0, 0.0
    for number, (images, labels) in enumerate(stream(Labelled(x, y), batch, torch.Generator(), device=device)):
        if number == 3:  # after the warm-up
            if device.type == "cuda":
                torch.cuda.synchronize()
            started, done = time.perf_counter(), 0
        with autocast(device):
            loss = torch.nn.functional.cross_entropy(model(images), labels)
        step(optimiser, loss, model)
        done += images.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize()
    return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", default="timm:resnet18")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    rows = [("cpu (fp32)", images_per_second(args.arch, torch.device("cpu"), max(3, args.steps // 4), args.batch))]
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        rows.append((f"cuda bf16 ({name})", images_per_second(args.arch, torch.device("cuda"), args.steps, args.batch)))
    threads = torch.get_num_threads()
    print(f"{args.arch} at 3x32x32, batch {args.batch}, torch {torch.__version__}, {threads} CPU threads")
    for label, rate in rows:
        print(f"{label:>40}: {rate:10.1f} images/s   ({rate / rows[0][1]:.1f}x the CPU)")
    if len(rows) == 1:
        print("no CUDA device here: the GPU row needs one")


if __name__ == "__main__":
    main()
