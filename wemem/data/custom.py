"""The user's own data: tables (``csv:PATH``, ``parquet:PATH``) and loader plug-ins (``package.module:loader``,
or an installed package's ``wemem.datasets`` entry point).

A loader is called as ``loader(data_root, seed)`` and returns one of

- ``(x, y)``: one pool of samples, split 80/20 into T and E with the seed;
- ``{"train": (x, y), "test": (x, y)}`` or ``((x, y), (x, y))``: explicit parts (T and E);
- ``{"x": x, "y": y, "members": mask}``: one pool with the victim's members marked (for ``[model] checkpoint``);
- a map-style ``torch.utils.data.Dataset`` of ``(sample, label)`` pairs, read once into tensors (at most
  :data:`MAX_MATERIALIZED_BYTES`).

Arrays may be numpy arrays or tensors; labels must be the integers ``0..C-1``. With a checkpoint, the explicit
train part (or the ``members`` mask, or a table's member column) is what the user's model trained on.

A table's label column is ``[data] label``; every other column is a feature (but the member column and those
``[data] exclude`` names): numeric ones standardized, the others one-hot encoded, in the table's column order.
The encoding (columns, categories, means, standard deviations, classes) is part of the pools and is stored with
the study, so that ``apply`` encodes a table the same way; :func:`encode_table` applies it, and is what a user
training a model outside the tool must apply too.
"""

from __future__ import annotations

import codecs
import collections
import dataclasses
import re
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .. import plugins
from ..errors import WememError, capped, require
from .loaders import MIN_NPZ_SAMPLES, byte_count, check_arrays, check_class_counts, official_split
from .registry import (
    DATASETS,
    DataOptions,
    Loader,
    Pools,
    dataset_key,
    is_plugin_dataset,
    seeded_permutation,
    split_train_test,
)

DEFAULT_LABEL = "label"  # a table's label column unless [data] label names another
TABLE_PREFIXES = ("csv:", "parquet:")  # the datasets with named columns, which [data] exclude can name
# names a column marking the rows a model trained on tends to have (compared lower-case, "-" and spaces as "_")
MEMBERSHIP_NAMES = frozenset(
    {
        "train",
        "training",
        "is_train",
        "in_train",
        "member",
        "members",
        "is_member",
        "membership",
        "split",
        "seen",
        "used_in_training",
    }
)
MAX_MATERIALIZED_BYTES = 4 * 2**30  # a Dataset is read into one float32 tensor; beyond 4 GiB, use arrays on disk
LOADER_CALL = "loader(data_root, seed)"
RESULT_FORMS = (
    "(x, y), {'train': (x, y), 'test': (x, y)}, {'x': x, 'y': y, 'members': mask} or a map-style "
    "torch.utils.data.Dataset"
)
MEMBERS_FIX = (
    "mark them: return {'train': (x, y), 'test': (x, y)} or {'x': x, 'y': y, 'members': mask} from a "
    "loader, or give a table a member column ([data] member_column)"
)


# ------------------------------------------------------------------------------------------- arrays


def as_array(value: Any, source: str, what: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    try:
        return np.asarray(value)
    except Exception as error:
        raise WememError(
            f"{source}: {what} is a {type(value).__name__} that is not an array ({error}); return "
            f"numpy arrays or tensors"
        ) from None


def check_class_labels(source: str, y: np.ndarray) -> int:
    """Labels of a loader plug-in: the integers 0..C-1, each class present; returns C."""
    require(
        y.dtype.kind in "iu" or (y.dtype.kind == "f" and bool(np.all(y == np.round(y)))),
        f"{source}: labels must be the integers 0..C-1 (found dtype {y.dtype}); map your classes to 0..C-1",
    )
    classes = np.unique(y)
    expected = np.arange(len(classes))
    if not np.array_equal(classes, expected):
        raise WememError(
            f"{source}: labels must be the integers 0..C-1 with every class present; found "
            f"{len(classes)} distinct labels in [{classes.min()}, {classes.max()}]; map them to "
            f"0..{len(classes) - 1} (e.g. numpy.unique(y, return_inverse=True)[1])"
        )
    return len(classes)


def checked_arrays(source: str, x: Any, y: Any, integer_labels: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """NaN/inf, shapes, enough samples and classes (the npz: checks); a part (``integer_labels=False``) is
    checked for counts and labels as a whole, with the other part."""
    x, y = as_array(x, source, "x"), as_array(y, source, "y")
    check_arrays(Path(source), x, y, class_counts=integer_labels)
    if integer_labels:
        check_class_labels(source, y)
    return x, y


def member_pools(name: str, x: np.ndarray, y: np.ndarray, members: np.ndarray, seed: int, num_classes: int) -> Pools:
    """Pools of data whose victim was trained elsewhere on the samples ``members`` marks.

    T is the members followed by a seeded draw of non-members as the shadows' pool (as many as there are
    members, at most half of the non-members); E is the other non-members (the RMIA population, every model's
    dev and test sets). :func:`wemem.data.make_study_split` then gives the victim all of the members.
    """
    if members.dtype.kind in "iu" and set(np.unique(members).tolist()) <= {0, 1}:
        members = members.astype(bool)  # 1/0 as well as true/false
    require(
        members.dtype == bool and members.shape == y.shape,
        f"{name}: the member mask must be one true/false value per sample ({len(y)}), found "
        f"{members.dtype} of shape {list(members.shape)}",
    )
    inside, outside = np.flatnonzero(members), np.flatnonzero(~members)
    require(
        len(inside) >= MIN_NPZ_SAMPLES // 2,
        f"{name}: only {len(inside)} samples are marked as members of the trained model; at least "
        f"{MIN_NPZ_SAMPLES // 2} are needed; {MEMBERS_FIX}",
    )
    require(
        len(outside) >= MIN_NPZ_SAMPLES,
        f"{name}: only {len(outside)} samples are not members of the trained model; the shadows, the RMIA "
        f"population and the non-member targets need at least {MIN_NPZ_SAMPLES}: add held-out samples",
    )
    outside = outside[seeded_permutation(len(outside), seed)]
    n_shadow = min(len(inside), len(outside) // 2)
    order = torch.as_tensor(np.concatenate([inside, outside]))
    xs = torch.as_tensor(x, dtype=torch.float32)[order].contiguous()
    ys = torch.as_tensor(y).long()[order].contiguous()
    return Pools(name, xs, ys, len(inside) + n_shadow, num_classes, members=torch.arange(len(inside)))


def pools_of_parts(
    name: str,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    seed: int,
    options: DataOptions,
    num_classes: int,
) -> Pools:
    if options.needs_members:  # the train part is what the user's model trained on
        x = np.concatenate([train[0], test[0]])
        y = np.concatenate([train[1], test[1]])
        mask = np.concatenate([np.ones(len(train[1]), bool), np.zeros(len(test[1]), bool)])
        return member_pools(name, x, y, mask, seed, num_classes)
    as_pair = lambda part: (torch.as_tensor(part[0], dtype=torch.float32), torch.as_tensor(part[1]).long())  # noqa: E731
    return official_split(name, as_pair(train), as_pair(test), num_classes)


def pools_of_pool(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    seed: int,
    options: DataOptions,
    num_classes: int,
    members: np.ndarray | None = None,
) -> Pools:
    if options.needs_members:
        if members is None:
            raise WememError(
                f"{name}: [model] checkpoint replaces the victim's pretraining, so the data must say "
                f"which samples that model trained on; {MEMBERS_FIX}"
            )
        return member_pools(name, x, y, members, seed, num_classes)
    pools = split_train_test(torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y).long(), seed, name)
    return dataclasses.replace(pools, num_classes=num_classes)


# ------------------------------------------------------------------------------------ loader plug-ins


def materialize(dataset: Any, source: str) -> tuple[np.ndarray, np.ndarray]:
    """A map-style Dataset's (sample, label) pairs as two arrays, refusing one beyond the size limit first."""
    n = len(dataset)
    require(n > 0, f"{source}: the Dataset is empty")
    first = dataset[0]
    require(
        isinstance(first, (tuple, list)) and len(first) == 2,
        f"{source}: a Dataset's items must be (sample, label) pairs; item 0 is a {type(first).__name__}",
    )
    sample_bytes = 4 * max(int(np.prod(np.shape(as_array(first[0], source, "a sample")))), 1)
    total = n * sample_bytes
    require(
        total <= MAX_MATERIALIZED_BYTES,
        f"{source}: the Dataset would take {total / 2**30:.1f} GiB as float32 tensors, above the "
        f"{MAX_MATERIALIZED_BYTES / 2**30:.0f} GiB that wemem reads into memory; use a subset, or smaller samples",
    )
    samples, labels = [], []
    for i in range(n):
        sample, label = dataset[i]
        samples.append(torch.as_tensor(as_array(sample, source, f"sample {i}"), dtype=torch.float32))
        try:
            labels.append(int(label))
        except (TypeError, ValueError):
            raise WememError(f"{source}: item {i}'s label is {label!r}; labels must be the integers 0..C-1") from None
    shapes = {tuple(s.shape) for s in samples}
    require(
        len(shapes) == 1,
        f"{source}: the Dataset's samples have different shapes {sorted(shapes)[:3]}; resize or pad them to one shape",
    )
    return torch.stack(samples).numpy(), np.asarray(labels)


def _pair(value: Any) -> bool:
    return isinstance(value, (tuple, list)) and len(value) == 2


def pools_from_loader_result(name: str, result: Any, seed: int, options: DataOptions) -> Pools:
    source = f"dataset {name!r}"
    plain = (str, bytes, tuple, list, dict, np.ndarray, torch.Tensor)
    if isinstance(result, torch.utils.data.Dataset) or (
        hasattr(result, "__getitem__") and hasattr(result, "__len__") and not isinstance(result, plain)
    ):
        x, y = materialize(result, source)
        x, y = checked_arrays(source, x, y)
        return pools_of_pool(name, x, y, seed, options, int(y.max()) + 1)
    if isinstance(result, dict) and {"train", "test"} <= set(result):
        parts = result["train"], result["test"]
    elif _pair(result) and _pair(result[0]) and _pair(result[1]):
        parts = result[0], result[1]
    else:
        parts = None
    if parts is not None:
        require(all(_pair(part) for part in parts), f"{source}: the train and test parts must each be (x, y)")
        (train_x, train_y), (test_x, test_y) = parts
        train = checked_arrays(f"{source} (train part)", train_x, train_y, integer_labels=False)
        test = checked_arrays(f"{source} (test part)", test_x, test_y, integer_labels=False)
        labels = np.concatenate([train[1], test[1]])
        check_class_counts(Path(source), labels)
        num_classes = check_class_labels(source, labels)
        require(
            train[0].shape[1:] == test[0].shape[1:],
            f"{source}: train samples have shape {list(train[0].shape[1:])}, test samples "
            f"{list(test[0].shape[1:])}; both parts need the same sample shape",
        )
        return pools_of_parts(name, train, test, seed, options, num_classes)
    if isinstance(result, dict) and {"x", "y"} <= set(result):
        x, y = checked_arrays(source, result["x"], result["y"])
        members = as_array(result["members"], source, "members") if "members" in result else None
        return pools_of_pool(name, x, y, seed, options, int(y.max()) + 1, members)
    if _pair(result):
        x, y = checked_arrays(source, *result)
        return pools_of_pool(name, x, y, seed, options, int(y.max()) + 1)
    raise WememError(f"{source} returned a {type(result).__name__}; a loader returns {RESULT_FORMS}")


def call_loader(
    name: str, loader: Callable[..., Any], data_root: Path | None, seed: int, options: DataOptions
) -> Pools:
    plugins.check_signature(loader, name, "dataset", (data_root, seed), LOADER_CALL)
    try:
        result = loader(data_root, seed)
    except WememError:
        raise
    except Exception as error:  # the user's loader failed: its message, and which loader
        raise WememError(
            f"dataset {name!r} failed when called as {LOADER_CALL} ({type(error).__name__}: {error}); fix the loader"
        ) from None
    return pools_from_loader_result(name, result, seed, options)


def load_plugin_dataset(name: str, data_root: Path | None, seed: int, options: DataOptions) -> Pools:
    """A loader named by import path: defined in a module of the study's folder, loaded by path (wemem.plugins)."""
    ref = plugins.parse_reference(name, "dataset")
    return call_loader(name, plugins.resolve(ref, "dataset", options.base_dir), data_root, seed, options)


def adapt_installed_loader(name: str, loader: Callable[..., Any]) -> Callable[..., Pools]:
    """An installed package's ``wemem.datasets`` entry point, as a registry loader returning Pools."""

    def load(root: Path | None, seed: int, options: DataOptions) -> Pools:
        return call_loader(name, loader, root, seed, options)

    load.takes_options = True  # type: ignore[attr-defined]
    return load


# ----------------------------------------------------------------------------------------------- tables


# checked longest first: UTF-32's little-endian mark begins with UTF-16's
_BYTE_ORDER_MARKS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)


def _text_instead_of_utf8(path: Path, error: UnicodeDecodeError) -> str | None:
    """What a file that is not UTF-8 holds, in words (None: no text at all, e.g. a binary file)."""
    with path.open("rb") as handle:
        head = handle.read(4096)
    for mark, encoding in _BYTE_ORDER_MARKS:
        if head.startswith(mark):
            return f"{encoding}, by its byte-order mark {mark.hex(' ')}"
    if b"\x00" in head:
        return None
    byte = error.object[error.start : error.start + 1].hex()
    return f"byte 0x{byte}, which UTF-8 never has there: 8-bit text such as Latin-1 or Windows-1252"


def _duplicate_columns(kind: str, path: Path, frame: pd.DataFrame) -> list[str]:
    """Column names the table repeats. pandas renames a CSV's second ``a`` to ``a.1`` silently, so a CSV's
    header row is read as written."""
    names = (
        frame.columns
        if kind != "csv"
        else pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False).iloc[0]
    )
    return [str(name) for name, count in collections.Counter(map(str, names)).items() if count > 1 and name]


# The largest table read: pandas holds it whole (8 bytes a number), and the encoded features and their split copy
# add about as much again as float32 (docs/big_tables.md: 1,000,000 x 50 peaks at 3 to 4 times its float32
# features). Checked from the file's size (a CSV number and its comma take about the 8 bytes it takes in memory)
# or a parquet file's metadata, before anything is read; a bigger table is sampled or read by a loader plug-in.
MAX_TABLE_BYTES = 4 * 2**30
# float64 work space for one block of columns while a table is encoded: bounds the encoding's own copies
ENCODING_BLOCK_BYTES = 64 * 2**20


def table_size(kind: str, path: Path) -> tuple[int, str]:
    """The bytes a table takes in memory as pandas numbers, estimated without reading it, and how."""
    if kind == "parquet":
        import pyarrow.parquet as pq  # type: ignore[import-untyped]  # pyarrow ships no type information

        metadata = pq.read_metadata(path)
        return 8 * metadata.num_rows * metadata.num_columns, f"{metadata.num_rows:,} rows x {metadata.num_columns}"
    size = path.stat().st_size
    return size, f"a {byte_count(size)} file"


def check_table_size(kind: str, path: Path, name: str) -> None:
    size, what = table_size(kind, path)
    require(
        size <= MAX_TABLE_BYTES,
        f"dataset {name!r}: {path} is {what}, about {byte_count(size)} in memory, above the "
        f"{byte_count(MAX_TABLE_BYTES)} that wemem reads as a table; refused before reading it. Train on a "
        f"sample of the rows (e.g. DataFrame.sample(n=...).to_{kind}(...)), or write a loader plug-in "
        f"(package.module:loader, see own_model.md) that returns numpy arrays, read in chunks",
    )


def read_parquet(path: Path) -> pd.DataFrame:
    """A parquet file as pandas' read_parquet gives it, converted column by column: pandas' own reader holds the
    Arrow table and the frame whole at once (twice the table), while a self-destructing conversion frees each
    Arrow column once converted and keeps the columns as separate blocks (no consolidating copy)."""
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pandas(split_blocks=True, self_destruct=True)


def read_table(kind: str, path: Path) -> pd.DataFrame:
    name = f"{kind}:{path}"
    require(path.exists(), f"dataset {name!r}: {path} does not exist; give the path of your table")
    require(path.is_file(), f"dataset {name!r}: {path} is a folder; give the table file in it")
    try:
        check_table_size(kind, path, name)
        frame = pd.read_csv(path) if kind == "csv" else read_parquet(path)
    except WememError:
        raise
    except UnicodeDecodeError as error:
        found = _text_instead_of_utf8(path, error)
        if found is None:
            raise WememError(
                f"dataset {name!r}: {path} is not a text table (binary data); save it as CSV "
                f"(DataFrame.to_csv) or use parquet:"
            ) from None
        raise WememError(f"dataset {name!r}: the file is not UTF-8 (found {found}); save it as UTF-8") from None
    except Exception as error:  # pandas/pyarrow raise many types for a damaged or foreign file; one fix for all
        raise WememError(
            f"dataset {name!r}: {path} is not a readable {kind} table ({type(error).__name__}: "
            f"{error}); save it with pandas (DataFrame.to_{kind})"
        ) from None
    repeated = _duplicate_columns(kind, path, frame)
    require(
        not repeated,
        f"dataset {name!r}: {path} has duplicate column names "
        f"({', '.join(capped(map(repr, repeated)))}); give every column a name of its own",
    )
    require(
        len(frame.columns) >= 2,
        f"dataset {name!r}: {path} has {len(frame.columns)} column(s); a table needs a "
        f"label column and at least one feature column",
    )
    require(
        len(frame) > 0,
        f"dataset {name!r}: {path} has no rows, only a header "
        f"({', '.join(capped(map(str, frame.columns)))}); add the samples below it",
    )
    return frame


def _is_categorical(dtype: Any) -> bool:
    return not pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)


def _dtypes(frame: pd.DataFrame) -> dict[Any, Any]:
    return dict(zip(frame.columns, frame.dtypes))


def _standardization(values: np.ndarray) -> dict[str, float]:
    """Mean and population standard deviation of a column's finite values (0 and 1 when there are none)."""
    finite = values[np.isfinite(values)]
    mean = float(finite.mean()) if len(finite) else 0.0
    std = float(finite.std()) if len(finite) else 1.0
    return {"mean": mean, "std": std if std > 0 else 1.0}


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def column_blocks(columns: list[Any], rows: int) -> Iterator[list[Any]]:
    """``columns`` in consecutive blocks of at most :data:`ENCODING_BLOCK_BYTES` as float64: a block is one
    selection (selecting a wide table's columns one by one costs ~0.3 ms each), and a long table's block is
    a few columns, so no copy of the whole table is made."""
    width = max(1, ENCODING_BLOCK_BYTES // max(8 * rows, 1))
    for start in range(0, len(columns), width):
        yield columns[start : start + width]


def fit_encoding(frame: pd.DataFrame, label: str, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """How a table becomes arrays: per feature column (in table order) standardization of numbers (mean and
    population standard deviation over all rows) or one-hot categories (sorted as text); the classes sorted."""
    features = [column for column in frame.columns if column != label and column not in exclude]
    dtypes = _dtypes(frame)
    numeric = [column for column in features if not _is_categorical(dtypes[column])]
    scales = {}
    for block_columns in column_blocks(numeric, len(frame)):
        block = frame[block_columns].to_numpy(dtype=np.float64)
        scales.update({column: _standardization(block[:, j]) for j, column in enumerate(block_columns)})
    columns = [
        {"column": str(column), "kind": "numeric", **scales[column]}
        if column in scales
        else {
            "column": str(column),
            "kind": "categorical",
            "categories": sorted({str(v) for v in frame[column].dropna()}),
        }
        for column in features
    ]
    labels = frame[label].dropna()
    classes = (
        sorted(_plain(v) for v in labels.unique())
        if pd.api.types.is_numeric_dtype(labels) and not pd.api.types.is_bool_dtype(labels)
        else sorted({str(v) for v in labels})
    )
    return {"label": str(label), "columns": columns, "classes": classes}


def check_encoding(encoding: Any, source: str) -> dict[str, Any]:
    """A stored encoding (read back from an export, a received file) has the shape fit_encoding gives it."""
    fix = "re-export the study with `wemem export`"
    require(
        isinstance(encoding, dict)
        and isinstance(encoding.get("label"), str)
        and isinstance(encoding.get("columns"), list)
        and isinstance(encoding.get("classes"), list)
        and len(encoding["classes"]) >= 2,
        f"{source}: [encoding] must hold label, columns and at least two classes; {fix}",
    )
    for spec in encoding["columns"]:
        numeric = (
            isinstance(spec, dict)
            and spec.get("kind") == "numeric"
            and all(isinstance(spec.get(k), (int, float)) for k in ("mean", "std"))
            and spec["std"] > 0
        )
        categorical = (
            isinstance(spec, dict) and spec.get("kind") == "categorical" and isinstance(spec.get("categories"), list)
        )
        require(
            (numeric or categorical) and isinstance(spec.get("column"), str),
            f"{source}: [encoding] column {spec!r:.80} is neither numeric (mean, std > 0) nor categorical "
            f"(categories); {fix}",
        )
    require(len(encoding["columns"]) > 0, f"{source}: [encoding] names no feature column; {fix}")
    return encoding


def encode_table(frame: pd.DataFrame, encoding: dict[str, Any], source: str = "table") -> tuple[np.ndarray, np.ndarray]:
    """Features ``x`` (float32) and class indices ``y`` of a table, encoded exactly as ``encoding`` says.

    Every check and the numeric columns' standardization run on blocks of columns (:func:`column_blocks`), so the
    cost grows linearly with the number of columns (a table may have 100,000) and the memory beyond ``frame`` and
    ``x`` stays within one block whatever the number of rows."""
    specs = encoding["columns"]
    names = [spec["column"] for spec in specs]
    absent = [column for column in names if column not in frame.columns]
    if absent:
        raise WememError(
            f"{source}: the encoding has column {absent[0]!r}, which the table lacks; its columns: "
            f"{', '.join(map(str, frame.columns))}"
        )
    for block_names in column_blocks(names, len(frame)):
        missing = frame[block_names].isna().sum().to_numpy()
        if missing.any():
            first = int(np.flatnonzero(missing)[0])
            raise WememError(
                f"{source}: column {block_names[first]!r} has {missing[first]} missing (NaN) value(s); fill or "
                f"drop those rows first"
            )
    dtypes = _dtypes(frame)
    numeric = [j for j, spec in enumerate(specs) if spec["kind"] == "numeric"]
    not_numbers = [names[j] for j in numeric if _is_categorical(dtypes[names[j]])]
    if not_numbers:
        raise WememError(
            f"{source}: column {not_numbers[0]!r} was numeric when encoded, now holds "
            f"{dtypes[not_numbers[0]]} values; give it numbers"
        )
    widths = [1 if spec["kind"] == "numeric" else len(spec["categories"]) for spec in specs]
    offsets = np.cumsum([0, *widths[:-1]]).astype(np.int64)
    x = np.empty((len(frame), sum(widths)), dtype=np.float32)
    for block in column_blocks(numeric, len(frame)):
        # copy=True: pandas 3 (copy-on-write) may hand out a read-only view, and the block is standardized in place
        values = frame[[names[j] for j in block]].to_numpy(dtype=np.float64, copy=True)
        infinite = np.count_nonzero(~np.isfinite(values), axis=0)
        if infinite.any():
            first = int(np.flatnonzero(infinite)[0])
            raise WememError(
                f"{source}: column {names[block[first]]!r} holds {infinite[first]} infinite value(s); "
                f"clip or drop those rows"
            )
        values -= np.asarray([specs[j]["mean"] for j in block])
        values /= np.asarray([specs[j]["std"] for j in block])
        x[:, offsets[block]] = values
    for j, spec in enumerate(specs):
        if spec["kind"] == "numeric":
            continue
        column = frame[names[j]].astype(str)
        unseen = sorted(set(column) - set(spec["categories"]))
        require(
            not unseen,
            f"{source}: column {names[j]!r} holds categories {unseen[:5]} that the study's encoding "
            f"does not know ({spec['categories'][:8]}); the table must match the study's",
        )
        x[:, offsets[j] : offsets[j] + widths[j]] = (
            column.to_numpy()[:, None] == np.asarray(spec["categories"])[None, :]
        )
    labels = frame[encoding["label"]]
    require(
        int(labels.isna().sum()) == 0,
        f"{source}: the label column {encoding['label']!r} has "
        f"{int(labels.isna().sum())} missing value(s); drop those rows",
    )
    classes = encoding["classes"]
    keys = [str(v) for v in labels] if classes and isinstance(classes[0], str) else [_plain(v) for v in labels]
    index = {value: i for i, value in enumerate(classes)}
    unknown = sorted({str(k) for k in keys if k not in index})
    require(not unknown, f"{source}: the label column holds classes {unknown[:5]} outside the study's {classes[:8]}")
    return x, np.asarray([index[k] for k in keys], dtype=np.int64)


class MembershipColumnWarning(UserWarning):
    """A table feature looks like a mark of the rows a model trained on: a victim that reads its own membership
    from its input makes every attack figure meaningless."""


# the warnings given in this process: a launch reads its dataset several times (the checks, the shared work) and
# the warnings module's own "once" forgets whenever a library changes the filters (pandas does, reading a CSV)
GIVEN_WARNINGS: set[str] = set()


def is_true_false(series: pd.Series) -> bool:
    """Whether a column holds only true/false or 1/0 values (and at least one)."""
    values = series.dropna().unique()
    return len(values) > 0 and all(v in (True, False) for v in values)  # 1 == True, 0 == False


def membership_like_columns(frame: pd.DataFrame, features: list[str]) -> list[str]:
    """The feature columns named like a membership mark (``train``, ``is_member``, ...) that hold true/false."""
    return [
        column
        for column in features
        if re.sub(r"[\s\-]+", "_", str(column).strip().lower()) in MEMBERSHIP_NAMES and is_true_false(frame[column])
    ]


def warn_membership_like(frame: pd.DataFrame, encoding: dict[str, Any], source: str) -> None:
    """A :class:`MembershipColumnWarning` per feature column named like a membership mark, once per process."""
    for column in membership_like_columns(frame, [spec["column"] for spec in encoding["columns"]]):
        message = (
            f"{source}: column {column!r} holds true/false values and is named like a mark of the rows a "
            f"model trained on, yet it is a feature: a model that reads its membership from its input makes "
            f"the attacks meaningless. If it marks what a [model] checkpoint trained on, set [data] "
            f'member_column = "{column}"; otherwise leave it out with [data] exclude = ["{column}"] '
            f"(wemem run: --exclude {column})"
        )
        if message not in GIVEN_WARNINGS:
            GIVEN_WARNINGS.add(message)
            warnings.warn(message, MembershipColumnWarning, stacklevel=2)


def excluded_columns(frame: pd.DataFrame, options: DataOptions, source: str) -> tuple[str, ...]:
    """The columns kept out of the features (``[data] exclude`` and the member column), checked against the
    table: each must exist, none may be the label, and at least one feature must remain."""
    columns = ", ".join(map(str, frame.columns))
    for column in options.exclude:
        require(
            column in frame.columns,
            f"{source}: [data] exclude names column {column!r}, which the table lacks; fix its spelling or drop "
            f"it from [data] exclude (wemem run: --exclude); the columns are: {columns}",
        )
        require(
            column != options.label,
            f"{source}: [data] exclude names {column!r}, the label column; drop it from [data] exclude (wemem "
            f"run: --exclude), or name another label column with [data] label",
        )
    excluded = tuple(options.exclude) + ((options.member_column,) if options.member_column else ())
    require(
        any(column != options.label and column not in excluded for column in frame.columns),
        f"{source}: [data] exclude leaves no feature column: {', '.join(map(repr, excluded))} are all the "
        f"columns besides the label {options.label!r}; keep at least one of them as a feature",
    )
    return excluded


def check_exclude_applies(dataset: str, exclude: tuple[str, ...]) -> None:
    """``[data] exclude`` names table columns: refuse it for data that has none."""
    require(
        not exclude or dataset_key(dataset) in TABLE_PREFIXES,
        f"dataset {dataset!r} is not a table, so it has no columns to exclude ({', '.join(exclude)}); [data] "
        f"exclude (wemem run: --exclude) applies to csv:PATH and parquet:PATH tables only: remove it",
    )


def member_mask(frame: pd.DataFrame, column: str, source: str) -> np.ndarray:
    require(
        column in frame.columns,
        f"{source}: no member column {column!r} (needed with [model] checkpoint to say "
        f"which rows the model trained on); columns: {', '.join(map(str, frame.columns))}",
    )
    values = frame[column]
    allowed = {True, False}  # admits 1 and 0 too, which equal True and False
    bad = [v for v in values.dropna().unique() if v not in allowed]
    require(
        not bad and not values.isna().any(),
        f"{source}: member column {column!r} must hold true/false or 1/0 for every row (found e.g. "
        f"{_plain(bad[0]) if bad else 'a missing value'!r})",
    )
    return values.to_numpy().astype(bool)


def label_column(frame: pd.DataFrame, options: DataOptions, name: str) -> str:
    """The table's label column (``[data] label`` or the default), checked to exist and hold two classes."""
    columns = ", ".join(map(str, frame.columns))
    label = options.label or DEFAULT_LABEL
    require(
        label in frame.columns,
        f"dataset {name!r}: no label column {label!r}{' (the default)' if options.label is None else ''}; name "
        f'the table\'s label column with [data] label = "COLUMN" (wemem run: --label COLUMN); the columns '
        f"are: {columns}",
    )
    labels = frame[label]
    constant = _plain(labels.dropna().iloc[0]) if labels.notna().any() else "empty"
    require(
        labels.nunique(dropna=True) >= 2,
        f"dataset {name!r}: the label column {label!r} is constant "
        f"({constant!r}); a classifier needs at least two classes",
    )
    return label


def load_table(kind: str, path: Path, seed: int, options: DataOptions) -> Pools:
    name = f"{kind}:{path}"
    frame = read_table(kind, path)
    label = label_column(frame, options, name)
    options = dataclasses.replace(options, label=label)
    if options.encoding is not None:  # the study's own encoding already says which columns are features
        encoding = check_encoding(options.encoding, f"dataset {name!r}")
    else:
        encoding = fit_encoding(frame, label, excluded_columns(frame, options, f"dataset {name!r}"))
        warn_membership_like(frame, encoding, f"dataset {name!r}")
    x, y = encode_table(frame, encoding, f"dataset {name!r}")
    check_arrays(path, x, y)  # enough samples and classes
    members = (
        member_mask(frame, options.member_column, f"dataset {name!r}")
        if options.needs_members and options.member_column
        else None
    )
    del frame  # the table is encoded: freed before the split copies the features
    pools = pools_of_pool(name, x, y, seed, options, len(encoding["classes"]), members)
    return dataclasses.replace(pools, encoding=encoding)


def _table_loader(kind: str) -> Callable[..., Pools]:
    def load(path: Path, seed: int, options: DataOptions) -> Pools:
        return load_table(kind, path, seed, options)

    load.takes_options = True  # type: ignore[attr-defined]
    load.__doc__ = (
        f"A {kind} table: [data] label names the label column; the other columns, less those [data] "
        f"exclude names, are features."
    )
    return load


DATASETS.register("csv:")(_table_loader("csv"))
DATASETS.register("parquet:")(_table_loader("parquet"))
DATASETS.adapt_installed(adapt_installed_loader)


# ------------------------------------------------------------------------------------------- loading


def _call(loader: Loader, where: Path | None, seed: int, options: DataOptions) -> Pools:
    return _marked(
        loader(where, seed, options) if getattr(loader, "takes_options", False) else loader(where, seed), options
    )


def _marked(pools: Pools, options: DataOptions) -> Pools:
    require(
        not options.needs_members or pools.members is not None,
        f"dataset {pools.name!r} does not say which samples a trained victim learned from, which [model] "
        f"checkpoint needs; use a table with a member column, or a loader that marks them",
    )
    return pools


def load_dataset(
    name: str, data_root: str | Path | None = None, seed: int = 7, options: DataOptions | None = None
) -> Pools:
    """Load a dataset by registry name, by ``prefix:PATH`` for the generic loaders, or by import path."""
    root = Path(data_root) if data_root is not None else None
    options = options or DataOptions()
    check_exclude_applies(name, options.exclude)
    if is_plugin_dataset(name):
        return _marked(load_plugin_dataset(name, root, seed, options), options)
    key = dataset_key(name)
    if key.endswith(":"):  # prefix:PATH
        loader = DATASETS.get(key)
        path = name[len(key) :]
        require(
            path.strip() != "",
            f"dataset {name!r} gives no path after {key!r}; write {key}PATH with the path of your data",
        )
        return _call(loader, Path(path), seed, options)
    return _call(DATASETS.get(name), root, seed, options)
