"""schemes.data: digits, IDX, CIFAR (restricted unpickling) and .npz loaders, on fixtures written here."""

from __future__ import annotations

import gzip
import os
import pickle
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from contracts.errors import DataError
from schemes.data import _formats as formats
from schemes.data.dataset import Dataset
from schemes.data.datasets import list_datasets, load_dataset


def pixels(x: torch.Tensor, ds: Dataset) -> torch.Tensor:
    """Undo the normalisation: back to [0, 1]-pixel units."""
    mean = torch.tensor(ds.mean).view(1, -1, 1, 1)
    std = torch.tensor(ds.std).view(1, -1, 1, 1)
    return x * std + mean


def assert_normalised(ds: Dataset) -> None:
    channels = ds.input_shape[0]
    per_channel = ds.x_train.transpose(0, 1).reshape(channels, -1).double()
    assert torch.allclose(per_channel.mean(dim=1), torch.zeros(channels, dtype=torch.float64), atol=1e-4)
    assert torch.allclose(per_channel.std(dim=1, correction=0), torch.ones(channels, dtype=torch.float64), atol=1e-3)
    assert all(0 < m < 1 for m in ds.mean) and all(s > 0 for s in ds.std)


# --- registry -----------------------------------------------------------------------------------


def test_list_datasets_is_sorted_and_complete() -> None:
    assert list_datasets() == ["cifar10", "cifar100", "digits", "fashion-mnist", "folder", "mnist", "npz"]


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(DataError, match=r"unknown data set 'imagenet'; known: cifar10, cifar100, digits"):
        load_dataset("imagenet")
    assert DataError.http_status == 400


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"input_shape": (2, 28, 28)}, "1 or 3 channels"),
        ({"input_shape": (1, 0, 28)}, "three positive integers"),
        ({"input_shape": (1, 28)}, "three positive integers"),
        ({"test_fraction": 0.0}, "strictly between 0 and 1"),
        ({"test_fraction": 1.5}, "strictly between 0 and 1"),
        ({"seed": -1}, "non-negative integer"),
        ({"path": Path("/nonexistent")}, "takes no path"),
    ],
)
def test_bad_options_fail_loudly(options: dict[str, object], message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_dataset("digits", **options)  # type: ignore[arg-type]


# --- digits -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


def test_digits_shapes_and_normalisation(digits: Dataset) -> None:
    assert (digits.name, digits.num_classes, digits.input_shape) == ("digits", 10, (1, 28, 28))
    assert digits.x_train.dtype == torch.float32 and digits.y_train.dtype == torch.int64
    assert digits.x_train.shape[1:] == digits.x_test.shape[1:] == (1, 28, 28)
    assert len(digits.x_train) + len(digits.x_test) == 1797
    assert len(digits.x_train) == len(digits.y_train) and len(digits.x_test) == len(digits.y_test)
    assert len(digits.mean) == len(digits.std) == 1
    assert_normalised(digits)
    assert "x_train" not in repr(digits)  # the repr stays short


def test_digits_split_is_a_stratified_partition() -> None:
    from sklearn.datasets import load_digits

    ds = load_dataset("digits", input_shape=(1, 8, 8), test_fraction=0.25)  # native size: pixels come back
    bunch = load_digits()
    counts = np.bincount(bunch.target, minlength=10)
    assert np.bincount(ds.y_test.numpy(), minlength=10).tolist() == [round(0.25 * c) for c in counts]
    restored = torch.cat([pixels(ds.x_train, ds), pixels(ds.x_test, ds)]) * 16
    rows = np.rint(restored.reshape(len(restored), -1).numpy()).astype(np.int64)
    labels = torch.cat([ds.y_train, ds.y_test]).numpy()
    ours = sorted(zip(map(tuple, rows.tolist()), labels.tolist(), strict=True))
    original = sorted(zip(map(tuple, bunch.data.astype(np.int64).tolist()), bunch.target.tolist(), strict=True))
    assert ours == original


def test_digits_split_is_deterministic_by_seed(digits: Dataset) -> None:
    again = load_dataset("digits", seed=0)
    assert torch.equal(again.x_train, digits.x_train) and torch.equal(again.y_test, digits.y_test)
    other = load_dataset("digits", seed=1)
    assert other.x_test.shape == digits.x_test.shape
    assert not torch.equal(other.x_test, digits.x_test)


def test_digits_three_channels_repeat_the_grey_one() -> None:
    ds = load_dataset("digits", input_shape=(3, 32, 32))
    assert ds.x_train.shape[1:] == (3, 32, 32) and ds.input_shape == (3, 32, 32)
    assert ds.mean[0] == ds.mean[1] == ds.mean[2] and ds.std[0] == ds.std[2]
    assert torch.equal(ds.x_train[:, 0], ds.x_train[:, 1]) and torch.equal(ds.x_test[:, 0], ds.x_test[:, 2])
    assert_normalised(ds)


def test_digits_grey_32(digits: Dataset) -> None:
    ds = load_dataset("digits", input_shape=(1, 32, 32))
    assert ds.x_test.shape[1:] == (1, 32, 32)
    assert torch.equal(ds.y_test, digits.y_test)  # the split does not depend on the shape
    assert_normalised(ds)


# --- MNIST / Fashion-MNIST IDX files ------------------------------------------------------------


def idx_bytes(magic: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + payload


def write(file: Path, content: bytes) -> Path:
    file.write_bytes(gzip.compress(content) if file.suffix == ".gz" else content)
    return file


class IdxSet:
    """A tiny MNIST-shaped directory: 20 training and 10 test images of 28x28, labels 0..9."""

    def __init__(self, folder: Path, gzipped: frozenset[str] = frozenset()) -> None:
        rng = np.random.default_rng(7)
        self.folder = folder
        self.images = {"train": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)}
        self.images["t10k"] = rng.integers(0, 256, (10, 28, 28), dtype=np.uint8)
        self.labels = {split: np.arange(len(x), dtype=np.uint8) % 10 for split, x in self.images.items()}
        for split, x in self.images.items():
            self.put(f"{split}-images-idx3-ubyte", idx_bytes(0x803, x.shape, x.tobytes()), gzipped)
            labels = self.labels[split]
            self.put(f"{split}-labels-idx1-ubyte", idx_bytes(0x801, labels.shape, labels.tobytes()), gzipped)

    def put(self, stem: str, content: bytes, gzipped: frozenset[str] = frozenset()) -> Path:
        for old in (self.folder / stem, self.folder / f"{stem}.gz"):
            old.unlink(missing_ok=True)
        return write(self.folder / (f"{stem}.gz" if stem in gzipped else stem), content)


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx_sets_load_plain_and_gzipped_files(tmp_path: Path, name: str) -> None:
    files = IdxSet(tmp_path, frozenset({"train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"}))
    assert (tmp_path / "train-images-idx3-ubyte.gz").is_file() and (tmp_path / "t10k-images-idx3-ubyte").is_file()
    ds = load_dataset(name, path=tmp_path)
    assert (ds.name, ds.num_classes, ds.input_shape) == (name, 10, (1, 28, 28))
    assert ds.x_train.shape == (20, 1, 28, 28) and ds.x_test.shape == (10, 1, 28, 28)
    expected = torch.from_numpy(files.images["t10k"]).float()[:, None] / 255
    assert torch.allclose(pixels(ds.x_test, ds), expected, atol=1e-5)
    assert ds.y_train.tolist() == files.labels["train"].tolist()
    assert_normalised(ds)


def test_idx_resized_to_three_channels(tmp_path: Path) -> None:
    IdxSet(tmp_path)
    ds = load_dataset("mnist", path=tmp_path, input_shape=(3, 32, 32))
    assert ds.x_train.shape == (20, 3, 32, 32) and len(ds.mean) == 3


def test_idx_needs_a_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"mnist is read from local files: pass path="):
        load_dataset("mnist")
    with pytest.raises(DataError, match=r"is not a directory"):
        load_dataset("mnist", path=tmp_path / "absent")


def test_idx_missing_file_names_both_paths(tmp_path: Path) -> None:
    IdxSet(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    plain = tmp_path / "t10k-labels-idx1-ubyte"
    expected = f"missing {plain} (also tried {plain}.gz)"
    with pytest.raises(DataError, match=re.escape(expected)):
        load_dataset("mnist", path=tmp_path)


IMAGES = "train-images-idx3-ubyte"
LABELS = "train-labels-idx1-ubyte"
GOOD_IMAGES = np.zeros((20, 28, 28), dtype=np.uint8).tobytes()
GOOD_LABELS = bytes(range(10)) * 2


@pytest.mark.parametrize(
    ("stem", "content", "gz", "message"),
    [
        (IMAGES, idx_bytes(0x801, (20, 28, 28), GOOD_IMAGES), False, "bad magic 0x00000801, expected 0x00000803"),
        (LABELS, idx_bytes(0x803, (20,), GOOD_LABELS), True, "bad magic 0x00000803, expected 0x00000801"),
        (IMAGES, b"\x00\x00", False, "too short for an IDX header"),
        (IMAGES, idx_bytes(0x803, (20,), b""), False, "truncated inside its IDX header"),
        (IMAGES, idx_bytes(0x803, (20, 28, 28), GOOD_IMAGES[:-5]), False, "truncated: .* promises 15680 .* 15675"),
        (IMAGES, idx_bytes(0x803, (20, 28, 28), GOOD_IMAGES[:100]), True, "truncated: .* found 100"),
        (IMAGES, idx_bytes(0x803, (20, 28, 28), GOOD_IMAGES + b"x"), False, "longer than its header says"),
        (IMAGES, idx_bytes(0x803, (20, 0, 28), b""), False, "empty dimension"),
        (IMAGES, idx_bytes(0x803, (19, 28, 28), GOOD_IMAGES[:-784]), False, "holds 19 images but .* holds 20 labels"),
        (LABELS, idx_bytes(0x801, (20,), GOOD_LABELS[:-1] + b"\x0a"), False, "label 10 at index 19 is not below 10"),
        (IMAGES, idx_bytes(0x803, (2**20, 2**10, 2**10), b""), False, "need more than the limit"),
    ],
)
def test_corrupt_idx_files_are_refused(tmp_path: Path, stem: str, content: bytes, gz: bool, message: str) -> None:
    files = IdxSet(tmp_path)
    bad = files.put(stem, content, frozenset({stem}) if gz else frozenset())
    with pytest.raises(DataError, match=re.escape(str(bad)) + ".*" + message):
        load_dataset("mnist", path=tmp_path)


def test_corrupt_gzip_is_refused(tmp_path: Path) -> None:
    IdxSet(tmp_path)
    bad = tmp_path / f"{LABELS}.gz"
    (tmp_path / LABELS).unlink()
    bad.write_bytes(b"\x1f\x8b\x08\x00" + b"\xff" * 40)
    with pytest.raises(DataError, match=re.escape(f"cannot read {bad}")):
        load_dataset("mnist", path=tmp_path)


def test_oversized_files_are_refused_before_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    IdxSet(tmp_path)
    monkeypatch.setattr(formats, "MAX_FILE_BYTES", 1000)
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte is 15696 bytes, over the limit of 1000 bytes"):
        load_dataset("mnist", path=tmp_path)


# --- CIFAR python batches -----------------------------------------------------------------------


def py2_pickle(record: dict[bytes, object]) -> bytes:
    """What Python 2's cPickle wrote for the CIFAR batches (protocol 2, str as BINSTRING, numpy 1.x names)."""

    def string(value: bytes) -> bytes:
        return b"T" + struct.pack("<i", len(value)) + value

    def item(value: object) -> bytes:
        if isinstance(value, bytes):
            return string(value)
        if isinstance(value, int):
            return b"J" + struct.pack("<i", value)
        if isinstance(value, list):
            return b"](" + b"".join(item(v) for v in value) + b"e"
        assert isinstance(value, np.ndarray)
        dims = b"(" + b"".join(item(d) for d in value.shape) + b"t"
        dtype = b"cnumpy\ndtype\n" + string(value.dtype.str[1:].encode()) + b"J\0\0\0\0J\1\0\0\0\x87R"
        minus_one = b"J" + struct.pack("<i", -1)
        state = b"(J\3\0\0\0" + string(value.dtype.str[:1].encode()) + b"NNN" + minus_one * 2 + b"J\0\0\0\0tb"
        head = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n(J\0\0\0\0t" + string(b"b") + b"\x87R"
        return head + b"(J\1\0\0\0" + dims + dtype + state + b"\x89" + string(value.tobytes()) + b"tb"

    return b"\x80\x02}(" + b"".join(item(k) + item(v) for k, v in record.items()) + b"u."


def batch(rng: np.random.Generator, n: int, label_key: str, classes: int) -> dict[str, object]:
    return {
        "batch_label": "a tiny batch",
        "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        label_key: [int(v) for v in rng.integers(0, classes, n)],
    }


def as_bytes_keys(record: dict[str, object]) -> dict[bytes, object]:
    return {k.encode(): v.encode() if isinstance(v, str) else v for k, v in record.items()}


def write_cifar10(folder: Path) -> dict[str, dict[str, object]]:
    """Six batches in three encodings: Python 2 originals, protocol 4 (_reconstruct), protocol 5 (_frombuffer)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    batches = {name: batch(rng, 4, "labels", 10) for name in [f"data_batch_{i}" for i in range(1, 6)]}
    batches["test_batch"] = batch(rng, 3, "labels", 10)
    for i, (name, record) in enumerate(batches.items()):
        if i % 3 == 0:
            content = py2_pickle(as_bytes_keys(record))
        else:
            content = pickle.dumps(as_bytes_keys(record), protocol=4 if i % 3 == 1 else 5)
        (folder / name).write_bytes(content)
    return batches


def expected_images(batches: list[dict[str, object]]) -> torch.Tensor:
    stacked = np.concatenate([np.asarray(b["data"]) for b in batches])
    return torch.from_numpy(stacked.reshape(-1, 3, 32, 32)).float() / 255


def test_python2_fixture_is_what_pickle_itself_reads(tmp_path: Path) -> None:
    """The hand-written Python 2 format is sound: plain pickle (trusted here) reads it back equal."""
    record = as_bytes_keys(batch(np.random.default_rng(0), 2, "labels", 10))
    loaded = pickle.loads(py2_pickle(record), encoding="bytes")
    assert loaded.keys() == record.keys() and np.array_equal(loaded[b"data"], np.asarray(record[b"data"]))


def test_cifar10_in_its_archive_folder(tmp_path: Path) -> None:
    batches = write_cifar10(tmp_path / "cifar-10-batches-py")
    ds = load_dataset("cifar10", path=tmp_path)
    assert (ds.name, ds.num_classes, ds.input_shape) == ("cifar10", 10, (3, 32, 32))
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.x_test.shape == (3, 3, 32, 32)
    train = [batches[f"data_batch_{i}"] for i in range(1, 6)]
    assert torch.allclose(pixels(ds.x_train, ds), expected_images(train), atol=1e-5)
    assert ds.y_train.tolist() == [v for b in train for v in b["labels"]]  # type: ignore[attr-defined]
    assert ds.y_test.tolist() == batches["test_batch"]["labels"]
    assert_normalised(ds)


def test_cifar10_batches_directly_in_path_and_resized_to_grey(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    ds = load_dataset("cifar10", path=tmp_path, input_shape=(1, 28, 28))
    assert ds.x_train.shape == (20, 1, 28, 28) and len(ds.mean) == 1


def test_cifar100_with_str_keys_and_fine_labels(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(5)
    train, test = batch(rng, 6, "fine_labels", 100), batch(rng, 2, "fine_labels", 100)
    train["fine_labels"] = [0, 99, 42, 7, 99, 0]
    train["coarse_labels"] = [0, 19, 3, 1, 19, 0]
    (folder / "train").write_bytes(pickle.dumps(train))
    (folder / "test").write_bytes(pickle.dumps(as_bytes_keys(test), protocol=4))
    ds = load_dataset("cifar100", path=tmp_path)
    assert ds.num_classes == 100 and ds.y_train.tolist() == [0, 99, 42, 7, 99, 0]
    assert torch.allclose(pixels(ds.x_test, ds), expected_images([test]), atol=1e-5)


class TouchesAFile:
    """A pickle that creates a file when it is unpickled, by a call to pathlib."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[object, ...]:
        return (Path.touch, (self.target,))


class RunsAShellCommand:
    """A pickle that runs `touch` through os.system when it is unpickled."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[object, ...]:
        return (os.system, (f"touch '{self.target}'",))


def test_malicious_fixture_really_is_malicious(tmp_path: Path) -> None:
    """Guards the next test against passing vacuously: an unrestricted unpickler does run it."""
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps({"data": TouchesAFile(proof)}))
    assert proof.exists()


@pytest.mark.parametrize(
    ("payload", "global_name"), [(TouchesAFile, r"pathlib"), (RunsAShellCommand, r"(posix|nt)\.system")]
)
def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path, payload: type, global_name: str) -> None:
    write_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    record = batch(np.random.default_rng(1), 4, "labels", 10)
    record["batch_label"] = payload(marker)
    (tmp_path / "data_batch_2").write_bytes(pickle.dumps(record))
    with pytest.raises(DataError, match=rf"data_batch_2 refused: global {global_name}.* is not allowed"):
        load_dataset("cifar10", path=tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("data_value", "message"),
    [
        (np.array([1, "a"], dtype=object), "refused: dtype 'O8' is not a plain integer type"),
        (np.zeros((2, 3072), dtype=np.float32), "refused: dtype 'f4' is not a plain integer type"),
        (
            np.zeros((2, 100), dtype=np.uint8),
            r"'data' must be a uint8 array of shape \(N, 3072\), found uint8 \(2, 100\)",
        ),
        (np.zeros((2, 3072), dtype=np.int64), r"'data' must be a uint8 array .* found int64"),
        ("not an array", r"'data' must be a uint8 array .* found str"),
    ],
)
def test_cifar_data_of_the_wrong_kind_is_refused(tmp_path: Path, data_value: object, message: str) -> None:
    write_cifar10(tmp_path)
    record = {"data": data_value, "labels": [0, 1]}
    (tmp_path / "test_batch").write_bytes(pickle.dumps(record, protocol=4))
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "test_batch")) + ".*" + message):
        load_dataset("cifar10", path=tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (pickle.dumps({"data": np.zeros((2, 3072), np.uint8)}), "has no 'labels' entry"),
        (pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]}), r"labels 10 at index 1 .* 0\.\.9"),
        (pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0]}), "holds 2 images but 1 labels"),
        (pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": ["0", "1"]}), "must be a list of integers"),
        (pickle.dumps([1, 2, 3]), "does not hold a CIFAR batch"),
        (pickle.dumps({"data": np.zeros((2, 3072), np.uint8)})[:-20], "not a readable CIFAR batch"),
        (pickle.dumps({"data": b"x"}, protocol=2), r"global _codecs\.encode is not allowed"),
    ],
)
def test_malformed_cifar_batches_are_refused(tmp_path: Path, content: bytes, message: str) -> None:
    write_cifar10(tmp_path)
    (tmp_path / "data_batch_3").write_bytes(content)
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "data_batch_3")) + ".*" + message):
        load_dataset("cifar10", path=tmp_path)


def test_missing_cifar_batch_is_named(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    (tmp_path / "test_batch").unlink()
    with pytest.raises(DataError, match=re.escape(f"missing {tmp_path / 'test_batch'}")):
        load_dataset("cifar10", path=tmp_path)
    with pytest.raises(DataError, match=re.escape(f"missing {tmp_path / 'train'}")):
        load_dataset("cifar100", path=tmp_path)


# --- .npz ---------------------------------------------------------------------------------------


def to_layout(images: np.ndarray, layout: str) -> np.ndarray:
    """From (N, C, H, W) to the layout named."""
    if layout == "NHW":
        return images[:, 0]
    return images.transpose(0, 2, 3, 1) if layout == "NHWC" else images


@pytest.mark.parametrize(
    ("layout", "channels", "dtype"),
    [("NHW", 1, "uint8"), ("NHWC", 1, "uint8"), ("NHWC", 3, "float32"), ("NCHW", 3, "uint8"), ("NCHW", 1, "float64")],
)
def test_npz_layouts(tmp_path: Path, layout: str, channels: int, dtype: str) -> None:
    rng = np.random.default_rng(11)
    train = rng.integers(0, 256, (6, channels, 8, 8), dtype=np.uint8)
    test = rng.integers(0, 256, (4, channels, 8, 8), dtype=np.uint8)
    scale = 1 if dtype == "uint8" else 255
    file = tmp_path / "set.npz"
    arrays = {"x_train": train, "x_test": test}
    stored: dict[str, object] = {k: to_layout((v / scale).astype(dtype), layout) for k, v in arrays.items()}
    stored |= {"y_train": np.array([0, 1, 2, 0, 1, 2]), "y_test": np.array([2, 1, 0, 4], dtype=np.uint8)}
    np.savez(file, **stored)  # type: ignore[arg-type]
    ds = load_dataset("npz", path=file)
    assert ds.input_shape == (channels, 8, 8) and ds.num_classes == 5
    assert torch.allclose(pixels(ds.x_test, ds), torch.from_numpy(test).float() / 255, atol=1e-5)
    assert ds.y_test.dtype == torch.int64 and ds.y_test.tolist() == [2, 1, 0, 4]
    assert_normalised(ds)


def test_npz_ambiguous_layout_is_channel_first(tmp_path: Path) -> None:
    file = tmp_path / "set.npz"
    x = np.zeros((2, 3, 8, 3), dtype=np.uint8)
    np.savez(file, x_train=x, x_test=x, y_train=np.array([0, 1]), y_test=np.array([1, 0]))
    assert load_dataset("npz", path=file).input_shape == (3, 8, 3)


def npz(file: Path, **overrides: object) -> Path:
    arrays: dict[str, object] = {
        "x_train": np.zeros((2, 8, 8), dtype=np.uint8),
        "y_train": np.array([0, 1]),
        "x_test": np.zeros((1, 8, 8), dtype=np.uint8),
        "y_test": np.array([1]),
    }
    arrays.update(overrides)
    np.savez(file, **{k: v for k, v in arrays.items() if v is not None})  # type: ignore[arg-type]
    return file


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"y_test": None}, r"lacks y_test \(needs x_train, y_train, x_test, y_test\)"),
        ({"x_train": np.array([[[None]]], dtype=object)}, "allow_pickle=False"),
        ({"x_train": np.full((2, 8, 8), 1.5)}, r"float x_train must lie in \[0, 1\]"),
        ({"x_train": np.full((2, 8, 8), np.nan)}, r"float x_train must lie in \[0, 1\]"),
        ({"x_test": np.zeros((1, 8, 8), dtype=np.int16)}, "x_test has dtype int16; expected uint8"),
        ({"x_train": np.zeros((2, 5, 5, 5), dtype=np.uint8)}, r"x_train has shape \(2, 5, 5, 5\)"),
        ({"x_test": np.zeros((1, 9, 9), dtype=np.uint8)}, r"x_train images are \(1, 8, 8\) but x_test"),
        ({"y_train": np.array([0, -1])}, "negative label"),
        ({"y_train": np.array([0.0, 1.0])}, "y_train must be a 1-D integer array"),
        ({"y_test": np.array([1, 1])}, "y_test holds 2 labels for 1 images"),
        ({"x_test": np.zeros((0, 8, 8), dtype=np.uint8), "y_test": np.zeros(0, dtype=np.int64)}, "x_test is empty"),
    ],
)
def test_bad_npz_is_refused(tmp_path: Path, overrides: dict[str, object], message: str) -> None:
    file = npz(tmp_path / "bad.npz", **overrides)
    with pytest.raises(DataError, match=re.escape(str(file)) + ".*" + message):
        load_dataset("npz", path=file)


def test_npz_that_is_not_a_zip_or_not_there(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plain = tmp_path / "plain.npy"
    np.save(plain, np.zeros(3))
    with pytest.raises(DataError, match=re.escape(f"cannot read {plain} as .npz")):
        load_dataset("npz", path=plain)
    with pytest.raises(DataError, match=r"npz: .*absent.npz is not a file"):
        load_dataset("npz", path=tmp_path / "absent.npz")
    big = tmp_path / "big.npz"  # a small file that unpacks to a large one
    zeros = np.zeros((2000, 8, 8), dtype=np.uint8)
    np.savez_compressed(big, x_train=zeros, y_train=np.zeros(2000, np.int64), x_test=zeros, y_test=np.zeros(2000))
    monkeypatch.setattr(formats, "MAX_FILE_BYTES", big.stat().st_size + 10)
    with pytest.raises(DataError, match=r"big.npz unpacks to \d+ bytes, over the limit"):
        load_dataset("npz", path=big)
