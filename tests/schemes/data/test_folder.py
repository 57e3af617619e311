"""schemes.folder: image folders (ImageFolder layout) as a lazy data set, on fixtures written here."""

from __future__ import annotations

import os
import pickle
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from contracts.datasets import manifest_digest
from contracts.errors import DataError
from schemes.data import folder
from schemes.data.dataset import Dataset
from schemes.data.datasets import list_datasets, load_dataset
from schemes.data.folder import FolderImages, folder_manifest

H, W = 6, 5
NORM3 = ((0.5, 0.4, 0.3), (0.25, 0.2, 0.3))
NORM1 = ((0.5,), (0.25,))


def rgb(seed: int, size: tuple[int, int] = (H, W)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def grey(seed: int, size: tuple[int, int] = (H, W)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8)


def save(file: Path, pixels: np.ndarray) -> Path:
    file.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(file)
    return file


def make_folder(root: Path, colour: bool = True, per_class: int = 3, test: str = "val") -> dict[str, np.ndarray]:
    """Classes "a" and "b" in train/ and `test`/: files 0.png, 1.png, ...; returns the pixels by relative path."""
    written = {}
    for s, (split, count) in enumerate((("train", per_class), (test, 2))):
        for c, name in enumerate(("b", "a")):
            for i in range(count):
                rel = f"{split}/{name}/{i}.png"
                written[rel] = rgb(100 * s + 10 * c + i) if colour else grey(100 * s + 10 * c + i)
                save(root / rel, written[rel])
    return written


def decoded(file: Path, mode: str) -> np.ndarray:
    with Image.open(file) as image:
        return np.asarray(image.convert(mode))


def as_chw(pixels: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(pixels.astype(np.float32)) / 255.0
    return x[None] if x.ndim == 2 else x.permute(2, 0, 1)


def npz_twin(file: Path, ds: Dataset[FolderImages], written: dict[str, np.ndarray]) -> Path:
    """The same pixels and labels as a .npz, in the folder's order."""
    arrays = {}
    for split, images, labels in (("train", ds.x_train, ds.y_train), ("test", ds.x_test, ds.y_test)):
        arrays[f"x_{split}"] = np.stack([written[rel] for rel in images.relative_paths()])
        arrays[f"y_{split}"] = labels.numpy()
    np.savez(file, **arrays)
    return file


# --- layout: classes, order, labels ----------------------------------------------------------------


def test_folder_is_a_known_format() -> None:
    assert "folder" in list_datasets()
    with pytest.raises(DataError, match=r"folder is read from local files: pass path= \(a directory\)"):
        load_dataset("folder")


def test_classes_order_and_labels(tmp_path: Path) -> None:
    for name in ("b", "a-b", "a", "A"):
        save(tmp_path / "train" / name / "0.png", rgb(1))
    for rel in ("x.png", "x/y.png", "x-y.png", "B.png", "sub/deeper/z.png"):
        save(tmp_path / "train" / "a" / rel, rgb(2))
    save(tmp_path / "val" / "b" / "0.png", rgb(3))
    save(tmp_path / "val" / "A" / "0.png", rgb(4))
    ds = load_dataset("folder", path=tmp_path, normalisation=NORM3)
    assert ds.classes == ("A", "a", "a-b", "b") and ds.num_classes == 4  # Python's str order
    assert list(ds.x_train.relative_paths()) == [
        "train/A/0.png",
        *(f"train/a/{rel}" for rel in ("0.png", "B.png", "sub/deeper/z.png", "x-y.png", "x.png", "x/y.png")),
        "train/a-b/0.png",
        "train/b/0.png",
    ]
    assert ds.y_train.tolist() == [0, 1, 1, 1, 1, 1, 1, 2, 3] and ds.y_train.dtype == torch.int64
    assert list(ds.x_test.relative_paths()) == ["val/A/0.png", "val/b/0.png"] and ds.y_test.tolist() == [0, 3]
    assert list(ds.x_test.files()) == [tmp_path / "val/A/0.png", tmp_path / "val/b/0.png"]
    assert ds.x_train.root == tmp_path


def test_hidden_non_image_and_special_files_are_skipped(tmp_path: Path) -> None:
    make_folder(tmp_path)
    save(tmp_path / "train" / "a" / "UPPER.PNG", rgb(5))  # extensions in any case
    save(tmp_path / "train" / "a" / "more.JPeG", rgb(6))
    (tmp_path / "train" / "a" / "notes.txt").write_text("not an image")
    save(tmp_path / "train" / "a" / "anim.gif", grey(7))  # not an extension that counts
    save(tmp_path / "train" / "a" / ".hidden.png", rgb(8))
    save(tmp_path / "train" / "a" / ".cache" / "x.png", rgb(9))
    save(tmp_path / "train" / ".hidden_class" / "x.png", rgb(9))
    save(tmp_path / "train" / "loose.png", rgb(10))  # not in a class folder
    os.mkfifo(tmp_path / "train" / "a" / "queue.png")  # not a regular file: never opened
    ds = load_dataset("folder", path=tmp_path)
    assert ds.classes == ("a", "b")
    assert list(ds.x_train.relative_paths())[:5] == [
        f"train/a/{n}" for n in ("0.png", "1.png", "2.png", "UPPER.PNG", "more.JPeG")
    ]
    assert len(ds.x_train) == 8


@pytest.mark.parametrize("test", ["val", "test"])
def test_val_or_test_is_the_test_split(tmp_path: Path, test: str) -> None:
    make_folder(tmp_path, test=test)
    ds = load_dataset("folder", path=tmp_path)
    assert ds.x_test.shape == (4, 3, H, W) and ds.y_test.tolist() == [0, 0, 1, 1]
    assert ds.x_test.relative_path(0) == f"{test}/a/0.png"


def test_bad_layouts_are_refused(tmp_path: Path) -> None:
    make_folder(tmp_path)
    save(tmp_path / "test" / "a" / "0.png", rgb(1))
    with pytest.raises(
        DataError, match=r"holds both val/ and test/, so the test split is ambiguous: remove val/ or test/"
    ):
        load_dataset("folder", path=tmp_path)
    (tmp_path / "test" / "a" / "0.png").unlink()
    (tmp_path / "test" / "a").rmdir()
    (tmp_path / "test").rmdir()
    save(tmp_path / "val" / "zebra" / "0.png", rgb(1))
    save(tmp_path / "val" / "yak" / "0.png", rgb(1))
    with pytest.raises(DataError, match=r"val has class folders that train/ lacks: yak, zebra"):
        load_dataset("folder", path=tmp_path)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda root: save(root / "val" / "a" / "0.png", rgb(1)), r"has no train/ folder"),
        (lambda root: save(root / "train" / "a" / "0.png", rgb(1)), r"has no val/ or test/ folder"),
        (lambda root: ((root / "train").mkdir(), (root / "val").mkdir()), r"train holds no class folders"),
        (
            lambda root: (
                save(root / "train" / "a" / "0.png", rgb(1)),
                (root / "train" / "b").mkdir(),
                (root / "val").mkdir(),
            ),
            r"train/b holds no images \(\.bmp, \.jpeg",
        ),
        (
            lambda root: (save(root / "train" / "a" / "0.png", rgb(1)), (root / "val" / "a").mkdir(parents=True)),
            r"val holds no images",
        ),
        (
            lambda root: (save(root / "train" / "a" / "0.png", rgb(1)), (root / "val").write_text("")),
            r"val is not a folder",
        ),
    ],
)
def test_missing_or_empty_parts_are_refused(tmp_path: Path, setup: object, message: str) -> None:
    setup(tmp_path)  # type: ignore[operator]
    with pytest.raises(DataError, match=message):
        load_dataset("folder", path=tmp_path)


@pytest.mark.parametrize(
    ("link", "target"),
    [
        ("train/a/link.png", "train/a/0.png"),
        ("train/a/.hidden.png", "train/a/0.png"),  # hidden names are skipped, but a link is still refused
        ("train/c", "train/a"),
        ("val/b/sub", "train/b"),
        ("extra", "train"),
    ],
)
def test_symbolic_links_are_refused(tmp_path: Path, link: str, target: str) -> None:
    make_folder(tmp_path)
    (tmp_path / link).symlink_to(tmp_path / target)
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / link}: an image folder may not hold symbolic links")):
        load_dataset("folder", path=tmp_path)


def test_a_linked_root_is_refused(tmp_path: Path) -> None:
    make_folder(tmp_path / "real")
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    with pytest.raises(DataError, match=r"alias: an image folder may not be a symbolic link"):
        load_dataset("folder", path=tmp_path / "alias")


# --- values --------------------------------------------------------------------------------------


def test_pixels_come_back_normalised(tmp_path: Path) -> None:
    written = make_folder(tmp_path)
    ds = load_dataset("folder", path=tmp_path, normalisation=NORM3)
    assert (ds.input_shape, ds.mean, ds.std) == ((3, H, W), NORM3[0], NORM3[1])
    images = ds.x_train
    assert (images.shape, images.dtype, images.device, images.ndim, len(images)) == (
        (6, 3, H, W), torch.float32, torch.device("cpu"), 4, 6
    )  # fmt: skip
    mean, std = torch.tensor(NORM3[0]).view(3, 1, 1), torch.tensor(NORM3[1]).view(3, 1, 1)
    for i, rel in enumerate(images.relative_paths()):
        assert torch.allclose(images[i], (as_chw(written[rel]) - mean) / std, atol=1e-6)
    assert torch.equal(images.item(2), images[2]) and torch.equal(images[2], images[2:3][0])


def test_computed_normalisation_is_the_npz_one(tmp_path: Path) -> None:
    written = make_folder(tmp_path / "set", per_class=4)
    ds = load_dataset("folder", path=tmp_path / "set")
    twin = load_dataset("npz", path=npz_twin(tmp_path / "set.npz", ds, written))
    assert np.allclose(ds.mean, twin.mean, rtol=1e-12) and np.allclose(ds.std, twin.std, rtol=1e-12)
    assert torch.allclose(ds.x_train[:], twin.x_train, atol=1e-6)
    assert torch.allclose(ds.x_test[:], twin.x_test, atol=1e-6)
    assert torch.equal(ds.y_train, twin.y_train) and torch.equal(ds.y_test, twin.y_test)


@pytest.mark.parametrize("colour", [True, False])
@pytest.mark.parametrize("shape", [(1, H, W), (3, H, W), (3, 9, 4), (1, 3, 3)])
def test_conversions_and_resizing_are_the_npz_ones(tmp_path: Path, colour: bool, shape: tuple[int, int, int]) -> None:
    written = make_folder(tmp_path / "set", colour=colour)
    norm = NORM3 if shape[0] == 3 else NORM1
    ds = load_dataset("folder", path=tmp_path / "set", input_shape=shape, normalisation=norm)
    twin = load_dataset("npz", path=npz_twin(tmp_path / "set.npz", ds, written), input_shape=shape, normalisation=norm)
    assert ds.x_train.shape == twin.x_train.shape == (6, *shape)
    assert torch.equal(ds.x_train[:], twin.x_train) and torch.equal(ds.x_test[:], twin.x_test)


def test_default_shape_is_the_first_training_image(tmp_path: Path) -> None:
    save(tmp_path / "train" / "a" / "0.png", grey(1, (7, 9)))
    save(tmp_path / "train" / "b" / "0.png", rgb(2, (4, 4)))  # colour, another size: read as grey 7x9
    save(tmp_path / "val" / "a" / "0.png", rgb(3, (11, 2)))
    ds = load_dataset("folder", path=tmp_path)
    assert ds.input_shape == (1, 7, 9) and ds.x_test[0].shape == (1, 7, 9) and len(ds.mean) == 1
    (tmp_path / "train" / "a" / "0.png").unlink()
    save(tmp_path / "train" / "a" / "0.png", rgb(1, (3, 8)))
    assert load_dataset("folder", path=tmp_path).input_shape == (3, 3, 8)


def test_modes_palette_alpha_and_16_bit(tmp_path: Path) -> None:
    colours = rgb(1)
    alpha = np.random.default_rng(2).integers(0, 256, (H, W, 1), dtype=np.uint8)
    (tmp_path / "train/a").mkdir(parents=True)
    Image.fromarray(np.concatenate([colours, alpha], axis=2), "RGBA").save(tmp_path / "train/a/0.png")
    palette = Image.fromarray(colours).quantize(colors=8)  # with a tRNS chunk, which Pillow warns about on RGB
    palette.save(tmp_path / "train/a/1.png", transparency=bytes(range(8)))
    deep = np.random.default_rng(3).integers(0, 65536, (H, W), dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "train/a/2.png")  # mode I;16
    Image.fromarray(np.concatenate([grey(4)[..., None], alpha], axis=2), "LA").save(tmp_path / "train/a/3.png")
    save(tmp_path / "val/a/0.png", colours)
    ds = load_dataset("folder", path=tmp_path, input_shape=(3, H, W), normalisation=((0, 0, 0), (1, 1, 1)))
    x = ds.x_train
    assert torch.allclose(x[0], as_chw(colours), atol=1e-6)  # alpha dropped
    expected = decoded(tmp_path / "train/a/1.png", "RGBA")[..., :3]
    assert torch.allclose(x[1], as_chw(expected), atol=1e-6)  # palette looked up
    assert torch.allclose(x[2], torch.from_numpy(deep.astype(np.float32) / 65535).expand(3, H, W), atol=1e-6)
    assert torch.allclose(x[3], as_chw(grey(4)).expand(3, H, W), atol=1e-6)


def test_other_decoders_read_their_files(tmp_path: Path) -> None:
    pixels = rgb(1)
    for ext in ("bmp", "ppm", "tif", "tiff", "webp", "jpg"):
        save(tmp_path / "train" / "a" / f"x.{ext}", pixels)
    save(tmp_path / "train" / "a" / "y.pgm", grey(2))
    save(tmp_path / "val" / "a" / "0.png", pixels)
    ds = load_dataset("folder", path=tmp_path, normalisation=NORM3)
    for i, rel in enumerate(ds.x_train.relative_paths()):
        expected = decoded(tmp_path / rel, "RGB")  # JPEG and WebP are lossy: what Pillow itself decodes
        restored = ds.x_train[i] * torch.tensor(NORM3[1]).view(3, 1, 1) + torch.tensor(NORM3[0]).view(3, 1, 1)
        assert torch.allclose(restored, as_chw(expected), atol=1e-5), rel


# --- normalisation -------------------------------------------------------------------------------


def test_given_normalisation_applies_to_every_format() -> None:
    plain = load_dataset("digits")
    given = load_dataset("digits", normalisation=([0.5], [0.25]))
    assert (given.mean, given.std) == ((0.5,), (0.25,))
    restored = given.x_test * 0.25 + 0.5
    assert torch.allclose(restored, plain.x_test * plain.std[0] + plain.mean[0], atol=1e-5)


@pytest.mark.parametrize(
    "normalisation",
    [
        ((0.5,), (0.25,)),  # one value for three channels
        ((0.5, 0.5, 0.5), (0.25, 0.0, 0.25)),
        ((0.5, float("nan"), 0.5), (0.25, 0.25, 0.25)),
        ((0.5, 0.5, 0.5), (0.25, float("inf"), 0.25)),
        ((0.5, 0.5, 0.5), (0.25, -1.0, 0.25)),
        ((0.5, 0.5, 0.5), (0.25, 0.25)),
        ((True, 0.5, 0.5), (0.25, 0.25, 0.25)),
        (("0.5", 0.5, 0.5), (0.25, 0.25, 0.25)),
        ((0.5, 0.5, 0.5),),
        ("mean", "std"),
        ((10**400,), (1,)),
        None,
    ],
)
def test_bad_normalisation_is_refused(tmp_path: Path, normalisation: object) -> None:
    written = make_folder(tmp_path / "set")
    ds = load_dataset("folder", path=tmp_path / "set", normalisation=NORM3)
    file = npz_twin(tmp_path / "set.npz", ds, written)
    if normalisation is None:  # the reference: both formats load
        load_dataset("npz", path=file, normalisation=NORM3)
        return
    message = r"normalisation (must be \(mean, std\)|gives 1 values per statistic for images of 3 channels)"
    for name, path in (("folder", tmp_path / "set"), ("npz", file)):
        with pytest.raises(DataError, match=message):
            load_dataset(name, path=path, normalisation=normalisation)  # type: ignore[call-overload]


# --- hostile files -------------------------------------------------------------------------------


def test_corrupt_images_are_named(tmp_path: Path) -> None:
    make_folder(tmp_path)
    good = (tmp_path / "train/a/0.png").read_bytes()
    (tmp_path / "val/a/0.png").write_bytes(good[: len(good) // 2])  # truncated
    ds = load_dataset("folder", path=tmp_path, normalisation=NORM3)  # the test split is not decoded yet
    with pytest.raises(DataError, match=re.escape(f"cannot decode {tmp_path / 'val/a/0.png'}")):
        ds.x_test[0]
    bad = tmp_path / "train/b/1.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    with pytest.raises(DataError, match=re.escape(f"cannot decode {bad}")):
        load_dataset("folder", path=tmp_path)  # the statistics pass decodes every training image
    bad.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 5 6\nshowpage\n")  # never handed to Ghostscript
    with pytest.raises(DataError, match=re.escape(f"cannot decode {bad}: cannot identify image file")):
        load_dataset("folder", path=tmp_path)


def bomb_png(file: Path, width: int, height: int) -> Path:
    """A valid 1-bit PNG of width x height pixels, all zero: a few KB on disk."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    packer = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)
    body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return file


@pytest.mark.parametrize("side", [8100, 10_000, 20_000])  # under Pillow's warning, between it and its error, over
def test_decompression_bombs_are_refused(tmp_path: Path, side: int) -> None:
    make_folder(tmp_path)
    bomb = bomb_png(tmp_path / "val/a/bomb.png", side, side)
    assert bomb.stat().st_size < 200_000
    ds = load_dataset("folder", path=tmp_path)
    with pytest.raises(DataError, match=re.escape(str(bomb))):
        ds.x_test[:]


def test_the_pixel_bound_does_not_rely_on_pillow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_folder(tmp_path)
    bomb = bomb_png(tmp_path / "train/a/bomb.png", 20_000, 20_000)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # Pillow's own check off
    with pytest.raises(DataError, match=re.escape(f"{bomb} is 20000x20000 pixels, over the limit of 64000000")):
        load_dataset("folder", path=tmp_path)
    monkeypatch.setattr(folder, "MAX_IMAGE_PIXELS", H * W)
    bomb.unlink()
    load_dataset("folder", path=tmp_path)  # at the bound: read
    save(tmp_path / "train/a/big.png", rgb(1, (H, W + 1)))
    with pytest.raises(DataError, match=rf"big.png is {W + 1}x{H} pixels, over the limit of {H * W}"):
        load_dataset("folder", path=tmp_path)


def test_caps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_folder(tmp_path)  # 6 training and 4 test images, 2 classes
    monkeypatch.setattr(folder, "MAX_IMAGE_BYTES", 100)
    with pytest.raises(DataError, match=r"train/a/0.png is \d+ bytes, over the limit of 100 bytes for an image"):
        load_dataset("folder", path=tmp_path)
    monkeypatch.undo()
    monkeypatch.setattr(folder, "MAX_IMAGES", 9)
    with pytest.raises(DataError, match=r"holds more than 9 images"):
        load_dataset("folder", path=tmp_path)
    monkeypatch.setattr(folder, "MAX_IMAGES", 10)
    monkeypatch.setattr(folder, "MAX_CLASSES", 1)
    with pytest.raises(DataError, match=r"train holds more than 1 class folders"):
        load_dataset("folder", path=tmp_path)


# --- a lazy tensor ---------------------------------------------------------------------------------


def test_indexing_like_a_tensor(tmp_path: Path) -> None:
    make_folder(tmp_path, per_class=4)
    x = load_dataset("folder", path=tmp_path).x_train
    every = torch.stack([x.item(i) for i in range(len(x))])
    assert torch.equal(x[:], every) and torch.equal(x[1:7:2], every[1:7:2]) and torch.equal(x[::-3], every[[7, 4, 1]])
    assert (
        torch.equal(x[-1], every[-1])
        and torch.equal(x[np.int64(3)], every[3])
        and torch.equal(x[torch.tensor(2)], every[2])
    )
    picks = [5, 0, -2, 5]
    for index in (picks, torch.tensor(picks), np.array(picks), torch.tensor(picks, dtype=torch.int32)):
        assert torch.equal(x[index], every[picks])
    mask = torch.arange(len(x)) % 3 == 0
    assert torch.equal(x[mask], every[mask]) and x[[]].shape == (0, 3, H, W)
    for bad in (8, -9, [0, 8]):
        with pytest.raises(IndexError, match=r"out of range for 8 images"):
            x[bad]
    with pytest.raises(IndexError, match=r"1-D index of integers or bools"):
        x[torch.tensor([0.0])]
    with pytest.raises(TypeError, match=r"not tuple"):
        x[(0, 1)]  # type: ignore[index]
    assert list(iter(x.relative_paths())) == [x.relative_path(i) for i in range(len(x))]


def test_a_dataloader_with_workers_yields_what_indexing_does(tmp_path: Path) -> None:
    make_folder(tmp_path, per_class=5)
    ds = load_dataset("folder", path=tmp_path)
    loader = torch.utils.data.DataLoader(ds.x_train, batch_size=3, num_workers=2)
    batches = list(loader)
    assert [len(b) for b in batches] == [3, 3, 3, 1]
    for start, batch in zip(range(0, 10, 3), batches, strict=True):
        assert torch.equal(batch, ds.x_train[start : start + 3])
    pairs = torch.utils.data.StackDataset(ds.x_train, ds.y_train)  # images with their labels
    x, y = next(iter(torch.utils.data.DataLoader(pairs, batch_size=10, num_workers=2)))
    assert torch.equal(x, ds.x_train[:]) and torch.equal(y, ds.y_train)


def test_folder_images_hold_no_image_data(tmp_path: Path) -> None:
    sizes = {}
    for count in (2, 20):
        root = tmp_path / str(count)
        for i in range(count):
            save(root / "train" / "a" / f"{i:04d}.png", rgb(i, (64, 64)))
        save(root / "val" / "a" / "0.png", rgb(0, (64, 64)))
        x = load_dataset("folder", path=root).x_train
        x[:]  # decoding caches nothing
        copy = pickle.loads(pickle.dumps(x))
        assert torch.equal(copy[:], x[:]) and list(copy.relative_paths()) == list(x.relative_paths())
        sizes[count] = len(pickle.dumps(x))
        assert not any(isinstance(v, torch.Tensor) for v in vars(x).values())
    per_image = len("train/a/0000.png") + 8  # its path and its offset
    assert sizes[20] - sizes[2] <= 18 * per_image + 16
    assert sizes[20] < 1500 < 64 * 64 * 3  # less than one image's pixels


def test_folder_manifest_is_the_pinning_digest(tmp_path: Path) -> None:
    make_folder(tmp_path)
    (tmp_path / "train" / "a" / "notes.txt").write_text("covered too")
    assert folder_manifest(tmp_path) == manifest_digest(tmp_path) == folder_manifest(str(tmp_path))
    before = folder_manifest(tmp_path)
    (tmp_path / "train" / "a" / "notes.txt").write_text("changed")
    assert folder_manifest(tmp_path) != before
    (tmp_path / "val" / "a" / "link.png").symlink_to(tmp_path / "train" / "a" / "0.png")
    with pytest.raises(DataError, match=r"link.png: a pinned data set may not hold symbolic links"):
        folder_manifest(tmp_path)
