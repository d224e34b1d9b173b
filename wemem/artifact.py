"""The deployable artifact of a pruned, defended model: folded weights as safetensors (dense and compact), ONNX.

A pruned model leaves the engine as dense weights beside boolean masks (:mod:`wemem.pruning`). What ships is the
weights with the masks folded in (every pruned entry exactly zero), in formats that load without this package and
without unpickling anything:

- ``save_safetensors``: the dense folded state, tensors only (the ``safetensors`` format: a JSON header and raw
  buffers, nothing executable);
- ``save_sparse``: the compact form for unstructured sparsity, still a safetensors file (see :func:`sparse_tensors`);
- ``export_onnx``: the network as an ONNX graph with a dynamic batch axis, runnable by onnxruntime.

Each file carries an :class:`ArtifactMeta` (safetensors metadata and ONNX ``metadata_props`` are both str -> str
maps), so what a file is (model, data, setting, study and trial) travels with it; :func:`model_card` describes the
files for people, with their measured leakage and accuracy and their SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import nn

from .defenses import Setting
from .errors import WememError
from .files import write_atomically
from .pruning import Masks
from .validity import Check

FORMAT = "wemem-artifact"
VERSION = 1

# Max |log-softmax(onnxruntime) - log-softmax(torch)| accepted on the same float32 inputs. The two runtimes sum
# in different orders (fused GEMMs, other conv algorithms), which moves float32 outputs by a few ulps: measured
# 3.8e-6 on a trained, 60 %-pruned columnfc (finefoods, 1000 test rows, log-probs down to -27), 1.5e-6 on a
# random columnfc and 4e-7 on a random resnet18. 1e-4 is 25 times the largest, and far below what an attack or an
# accuracy resolves (a log-prob moves by 1e-4 when a probability moves by 0.01 %); a wrong graph (a dropped layer,
# a weight not folded) misses it by orders of magnitude.
ONNX_TOLERANCE = 1e-4

# the suffixes of the compact form's entries: NAME.__mask__ (packed nonzero pattern), NAME.__values__ (the
# nonzero values in order), NAME.__shape__ (the dense shape); a state key never ends so in a torch module
SPARSE_PARTS = ("__mask__", "__values__", "__shape__")

SAFETENSORS_FIX = (
    "give a file written by `wemem apply` or wemem.artifact.save_safetensors (a torch.save file is a pickle, "
    "which could run code when loaded, so it is never read as one)"
)


@dataclass(frozen=True)
class ArtifactMeta:
    """What an artifact is: the model that reads it, the data it was trained on, its sparsity and defense, and
    the study and trial it came from (None when it did not come from one)."""

    model: str  # a registered model name or a plug-in reference (wemem.models.build_model)
    dataset: str
    input_shape: tuple[int, ...]
    num_classes: int
    sparsity: float  # measured fraction of zero weights over the prunable layers
    setting: Setting | None
    study: str | None = None
    trial: int | None = None
    format: str = FORMAT
    version: int = VERSION

    def to_strings(self) -> dict[str, str]:
        """The metadata as str -> str (None entries left out); structured values as JSON."""
        values: dict[str, Any] = {
            "format": self.format,
            "version": str(self.version),
            "model": self.model,
            "dataset": self.dataset,
            "input_shape": json.dumps(list(self.input_shape)),
            "num_classes": str(self.num_classes),
            "sparsity": repr(self.sparsity),  # repr: the float reads back exactly
            "setting": None if self.setting is None else json.dumps(self.setting.to_json(), sort_keys=True),
            "study": self.study,
            "trial": None if self.trial is None else str(self.trial),
        }
        return {key: value for key, value in values.items() if value is not None}

    @classmethod
    def from_strings(cls, strings: Mapping[str, str], source: str = "artifact") -> ArtifactMeta:
        """The metadata :meth:`to_strings` wrote; a WememError naming ``source`` when it is not that."""
        if strings.get("format") != FORMAT:
            raise WememError(f"{source} holds no {FORMAT} metadata; write it with wemem.artifact (or `wemem apply`)")
        if strings.get("version") != str(VERSION):
            raise WememError(
                f"{source} is {FORMAT} version {strings.get('version')!r}; this wemem reads version {VERSION} "
                "(install the wemem that wrote it, or write the artifact again with this one)"
            )
        try:
            setting = json.loads(strings["setting"]) if "setting" in strings else None
            return cls(
                model=strings["model"],
                dataset=strings["dataset"],
                input_shape=tuple(int(size) for size in json.loads(strings["input_shape"])),
                num_classes=int(strings["num_classes"]),
                sparsity=float(strings["sparsity"]),
                # as stored by the tool that validated it: a file whose plug-in defense is not installed here
                # still reads
                setting=None if setting is None else Setting.recorded(setting["defense"], setting["settings"]),
                study=strings.get("study"),
                trial=int(strings["trial"]) if "trial" in strings else None,
            )
        except (KeyError, ValueError, TypeError) as error:
            raise WememError(
                f"{source}: its {FORMAT} metadata is damaged ({type(error).__name__}: {error}); write the "
                "artifact again with `wemem apply`"
            ) from None


# ----------------------------------------------------------------------------------------------- folding


def fold_masks(state: Mapping[str, torch.Tensor], masks: Masks) -> dict[str, torch.Tensor]:
    """The state with each mask folded into its weight: pruned entries exactly 0.0, live ones bit-identical
    (``torch.where`` selects, it never multiplies: a product would turn a pruned negative weight into -0.0).
    Tensors without a mask (biases, BatchNorm buffers, an unprunable output layer) are returned untouched."""
    unknown = sorted(set(masks) - set(state))
    if unknown:
        raise ValueError(f"masks for weights the state lacks: {unknown[:4]}")
    return {
        name: torch.where(masks[name], tensor, torch.zeros_like(tensor)) if name in masks else tensor
        for name, tensor in state.items()
    }


def measured_sparsity(state: Mapping[str, torch.Tensor], prunable: Iterable[str]) -> float:
    """The fraction of exactly-zero entries over the named (prunable) weights together."""
    prunable = list(prunable)
    zeros = sum(int((state[name] == 0).sum()) for name in prunable)
    total = sum(state[name].numel() for name in prunable)
    return zeros / total if total else 0.0


# ------------------------------------------------------------------------------------------- safetensors


def contiguous(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Own, contiguous CPU copies: safetensors refuses views and tensors sharing memory."""
    return {name: tensor.detach().cpu().contiguous().clone() for name, tensor in state.items()}


def safetensors_bytes(state: Mapping[str, torch.Tensor], meta: ArtifactMeta) -> bytes:
    return save_tensors(contiguous(state), metadata=meta.to_strings())


def save_safetensors(path: str | Path, state: Mapping[str, torch.Tensor], meta: ArtifactMeta) -> None:
    """The dense (folded) state as a safetensors file with ``meta``, written atomically."""
    write_atomically(path, safetensors_bytes(state, meta))


def what_it_is(head: bytes) -> str:
    """What a file that failed to read as safetensors looks like, for the message."""
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive (torch.save writes one: a pickle inside)"
    if head.startswith(b"\x80"):
        return "a Python pickle"
    if head[8:9] == b"{":
        return "a safetensors file cut short or damaged"
    return "not a safetensors file"


def read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and the raw metadata of a safetensors file; anything else (a pickle, text, a truncated file)
    is a WememError naming the file. Only the safetensors parser reads the bytes: nothing is unpickled."""
    path = Path(path)
    if not path.is_file():
        raise WememError(f"{path} {'is a folder' if path.is_dir() else 'does not exist'}; {SAFETENSORS_FIX}")
    data = path.read_bytes()
    try:
        tensors = load_tensors(data)
        header_length = int.from_bytes(data[:8], "little")
        metadata = json.loads(data[8 : 8 + header_length]).get("__metadata__", {})
    except (SafetensorError, ValueError) as error:
        raise WememError(f"{path} is {what_it_is(data[:16])} ({error}); {SAFETENSORS_FIX}") from None
    return tensors, metadata


def artifact_meta(metadata: Mapping[str, str], source: str) -> ArtifactMeta | None:
    """The file's ArtifactMeta, or None for a safetensors file written without one (by another tool)."""
    return None if "format" not in metadata else ArtifactMeta.from_strings(metadata, source)


def load_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], ArtifactMeta | None]:
    """A dense safetensors file's state and metadata (None: the file carries no wemem metadata)."""
    tensors, metadata = read_safetensors(path)
    if any(name.endswith(SPARSE_PARTS) for name in tensors):
        raise WememError(f"{path} is the compact sparse form; read it with wemem.artifact.load_sparse")
    return tensors, artifact_meta(metadata, str(path))


# ---------------------------------------------------------------------------------------- compact form


def sparse_size(tensor: torch.Tensor) -> int:
    """Bytes of a tensor in the compact form: its nonzero values, one bit per entry, its shape (int64)."""
    return int((tensor != 0).sum()) * tensor.element_size() + math.ceil(tensor.numel() / 8) + 8 * tensor.dim()


def sparse_tensors(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The compact encoding of a folded state, as plain tensors.

    Each floating-point tensor that is smaller so becomes three: ``NAME.__mask__`` (the nonzero pattern, flat,
    packed 8 entries a byte with ``np.packbits``, uint8), ``NAME.__values__`` (the nonzero values in row-major
    order, in the tensor's dtype) and ``NAME.__shape__`` (int64). An entry costs (1 - s) * 4 + 1/8 bytes in
    float32 against 4 dense, so the form wins above ~3 % sparsity; CSR/COO int32 indices cost (1 - s) * 8 and
    win only above 50 %, which unstructured pruning schedules start below. Every other tensor stays dense.
    """
    encoded: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if not tensor.is_floating_point() or sparse_size(tensor) >= tensor.numel() * tensor.element_size():
            encoded[name] = tensor
            continue
        flat = tensor.detach().cpu().flatten()
        nonzero = flat != 0
        encoded[f"{name}.__mask__"] = torch.from_numpy(np.packbits(nonzero.numpy()))
        encoded[f"{name}.__values__"] = flat[nonzero]
        encoded[f"{name}.__shape__"] = torch.tensor(tensor.shape, dtype=torch.int64)
    return encoded


def sparse_base(name: str) -> str | None:
    """The tensor a compact entry belongs to (None: a dense entry)."""
    stem, _, part = name.rpartition(".")
    return stem if part in SPARSE_PARTS else None


def dense_tensors(encoded: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """:func:`sparse_tensors` undone: the dense state, equal to the folded one; a WememError naming ``source``
    when the parts of a tensor do not fit together."""
    state: dict[str, torch.Tensor] = {}
    for name, tensor in encoded.items():
        base = sparse_base(name)
        if base is None:
            state[name] = tensor
        elif base not in state:
            state[base] = dense_tensor(base, encoded, source)
    return state


def dense_tensor(name: str, encoded: Mapping[str, torch.Tensor], source: str) -> torch.Tensor:
    """One tensor of the compact form made dense again, its three parts checked against each other."""
    damaged = f"{source}: the compact entries of {name} are damaged"
    fix = "write the file again with wemem.artifact.save_sparse"
    mask, values, shape = (encoded.get(f"{name}.{part}") for part in SPARSE_PARTS)
    if mask is None or values is None or shape is None:
        missing = [part for part in SPARSE_PARTS if f"{name}.{part}" not in encoded]
        raise WememError(f"{damaged} (no {', '.join(missing)}); {fix}")
    if mask.dtype != torch.uint8 or shape.dtype != torch.int64 or shape.dim() != 1 or bool((shape < 0).any()):
        raise WememError(f"{damaged} (mask {mask.dtype}, shape {shape.dtype} {shape.tolist()}); {fix}")
    size = math.prod(shape.tolist())
    nonzero = torch.from_numpy(np.unpackbits(mask.flatten().numpy(), count=size).astype(bool))
    if mask.numel() != math.ceil(size / 8) or int(nonzero.sum()) != values.numel():
        raise WememError(
            f"{damaged} (a {mask.numel()}-byte mask with {int(nonzero.sum())} entries set, shape {shape.tolist()}, "
            f"{values.numel()} values); {fix}"
        )
    dense = torch.zeros(size, dtype=values.dtype)
    dense[nonzero] = values.flatten()
    return dense.view(*shape.tolist())


def sparse_bytes(state: Mapping[str, torch.Tensor], meta: ArtifactMeta) -> bytes:
    return save_tensors(contiguous(sparse_tensors(state)), metadata=meta.to_strings())


def save_sparse(path: str | Path, state: Mapping[str, torch.Tensor], meta: ArtifactMeta) -> None:
    """The folded state in the compact form (:func:`sparse_tensors`), a safetensors file with ``meta``."""
    write_atomically(path, sparse_bytes(state, meta))


def load_sparse(path: str | Path) -> dict[str, torch.Tensor]:
    """The dense state of a compact file (:func:`save_sparse`), equal to the folded state it was written from."""
    tensors, _ = read_safetensors(path)
    return dense_tensors(tensors, str(path))


def load_sparse_meta(path: str | Path) -> tuple[dict[str, torch.Tensor], ArtifactMeta | None]:
    """:func:`load_sparse` with the file's metadata."""
    tensors, metadata = read_safetensors(path)
    return dense_tensors(tensors, str(path)), artifact_meta(metadata, str(path))


# ------------------------------------------------------------------------------------------------- ONNX


def onnx_bytes(model: nn.Module, input_shape: tuple[int, ...], meta: ArtifactMeta) -> bytes:
    """The model in eval mode as an ONNX graph: input "input" [batch, *input_shape] float32, output "output" (the
    module's forward output, the logits), a dynamic batch axis, ``meta`` in its metadata_props.

    The TorchScript exporter (``dynamo=False``) is the one that runs with torch alone: the torch.export-based
    default needs onnxscript. It warns that it is deprecated on every call; that warning is about this choice,
    made here deliberately, so it is silenced for this call only.
    """
    import onnx

    sample = torch.zeros(1, *input_shape)
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        exported = Path(folder) / "model.onnx"
        torch.onnx.export(
            model.eval().cpu(),
            (sample,),
            exported,
            dynamo=False,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
        )
        graph = onnx.load(exported)
    for key, value in meta.to_strings().items():
        graph.metadata_props.add(key=key, value=value)
    return graph.SerializeToString()


def export_onnx(model: nn.Module, input_shape: tuple[int, ...], path: str | Path, meta: ArtifactMeta) -> None:
    """:func:`onnx_bytes` written atomically to ``path``."""
    write_atomically(path, onnx_bytes(model, input_shape, meta))


def onnx_session(source: str | Path | bytes) -> Any:
    """An onnxruntime session on the CPU of an ONNX file (or its bytes); a WememError when it is not one."""
    import onnxruntime  # type: ignore[import-untyped]  # ships no type information

    name = "the ONNX bytes" if isinstance(source, bytes) else str(source)
    try:
        return onnxruntime.InferenceSession(
            source if isinstance(source, bytes) else str(source), providers=["CPUExecutionProvider"]
        )
    except Exception as error:  # onnxruntime raises its own (pybind) exception types for a file it cannot load
        raise WememError(
            f"{name} is not an ONNX model onnxruntime can run ({type(error).__name__}: {str(error)[:160]}); "
            "give the model.onnx `wemem apply` wrote"
        ) from None


def onnx_outputs(source: str | Path | bytes, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """The ONNX model's outputs (logits) on ``x`` by onnxruntime, in batches of ``batch_size`` rows."""
    session = onnx_session(source)
    rows = np.asarray(x, dtype=np.float32)
    return np.concatenate(
        [session.run(["output"], {"input": rows[i : i + batch_size]})[0] for i in range(0, len(rows), batch_size)]
    )


def log_softmax(logits: np.ndarray) -> np.ndarray:
    return torch.log_softmax(torch.from_numpy(logits), dim=1).numpy()


def check_onnx(model: nn.Module, source: str | Path | bytes, x: np.ndarray, tol: float = ONNX_TOLERANCE) -> float:
    """The max abs difference between onnxruntime's and torch's log-softmax outputs on ``x``; a WememError
    when it exceeds ``tol`` (the ONNX graph does not compute what the model does)."""
    with torch.no_grad():
        expected = log_softmax(model.eval().cpu()(torch.as_tensor(x, dtype=torch.float32)).numpy())
    difference = float(np.abs(log_softmax(onnx_outputs(source, x)) - expected).max()) if len(x) else 0.0
    if not difference <= tol:  # nan fails too
        raise WememError(
            f"the ONNX export's log-probabilities differ from torch's by up to {difference:.3g} on {len(x)} rows "
            f"(tolerance {tol:g}): the exported graph does not compute this model; export it with another opset "
            "or report the model's layers"
        )
    return difference


# ------------------------------------------------------------------------------------------- model card

CARD_JSON, CARD_MD = "model_card.json", "model_card.md"


@dataclass(frozen=True)
class Estimate:
    """A figure and its interval (nan bounds: none could be computed, e.g. a single seed)."""

    mean: float
    low: float = math.nan
    high: float = math.nan

    def to_json(self) -> dict[str, float]:
        return {"mean": self.mean, "low": self.low, "high": self.high}

    def text(self) -> str:
        bounds = "no interval" if math.isnan(self.low) else f"{self.low:.4f}, {self.high:.4f}"
        return f"{self.mean:.4f} [{bounds}]"


@dataclass(frozen=True)
class CardFigure:
    """One labelled measurement of the model: its test accuracy and leakage (the study's privacy metric, the
    strongest of the judging attacks), each with its interval, what it is, and how the interval was made."""

    label: str  # "confirmed", "reproduced", "search"
    what: str
    metric: str
    test_accuracy: Estimate
    leakage: Estimate
    judges: tuple[str, ...]
    interval: str

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "what": self.what,
            "metric": self.metric,
            "test_accuracy": self.test_accuracy.to_json(),
            "leakage": self.leakage.to_json(),
            "judges": list(self.judges),
            "interval": self.interval,
        }


def sha256_hex(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


@dataclass(frozen=True)
class CardInputs:
    """What a model card describes: the artifact, its sparsity per layer, its data, its labelled figures, the
    validity checks, the files beside it (name -> the bytes written, hashed into the card: a card cannot hold its
    own hash) and any notes."""

    meta: ArtifactMeta
    layer_sparsity: Mapping[str, float]
    data: Mapping[str, object]
    figures: Sequence[CardFigure]
    validity: Sequence[Check]
    files: Mapping[str, bytes]
    notes: Sequence[str] = ()


def card_document(inputs: CardInputs) -> dict[str, Any]:
    """model_card.json: what the artifact is and was measured to be, and the SHA-256 of each file beside it."""
    meta = inputs.meta
    return {
        "artifact": {**meta.to_strings(), "setting": None if meta.setting is None else meta.setting.to_json()},
        "data": dict(inputs.data),
        "sparsity": {"overall": meta.sparsity, "per_layer": dict(inputs.layer_sparsity)},
        "confirmed": any(figure.label == "confirmed" for figure in inputs.figures),
        "figures": [figure.to_json() for figure in inputs.figures],
        "notes": list(inputs.notes),
        "validity": [check.to_dict() for check in inputs.validity],
        "files": {
            name: {"sha256": sha256_hex(content), "bytes": len(content)} for name, content in inputs.files.items()
        },
    }


def card_markdown(card: Mapping[str, Any], meta: ArtifactMeta, validity: Sequence[Check]) -> str:
    """model_card.md: the JSON card for people."""
    setting = "none recorded" if meta.setting is None else f"`{json.dumps(meta.setting.to_json())}`"
    origin = f"study `{meta.study}`, trial {meta.trial}" if meta.study is not None else "no study recorded"
    lines = [
        f"# Model card: {meta.model} on {meta.dataset}",
        "",
        f"- model: `{meta.model}`, input shape {list(meta.input_shape)}, {meta.num_classes} classes",
        f"- defense setting: {setting}",
        f"- from: {origin}",
        "",
        "## Data",
        "",
        *[f"- {key}: {value}" for key, value in card["data"].items()],
        "",
        "## Sparsity",
        "",
        f"Overall {meta.sparsity:.4f} of the prunable weights are exactly zero.",
        "",
        "| layer | sparsity |",
        "| --- | --- |",
        *[f"| `{name}` | {value:.4f} |" for name, value in card["sparsity"]["per_layer"].items()],
        "",
        "## Leakage and accuracy",
        "",
        "| figure | test accuracy | leakage | judges | interval | what it is |",
        "| --- | --- | --- | --- | --- | --- |",
        *[
            f"| {f['label']} | {Estimate(**f['test_accuracy']).text()} | {f['metric']} "
            f"{Estimate(**f['leakage']).text()} | {', '.join(f['judges'])} | {f['interval']} | {f['what']} |"
            for f in card["figures"]
        ],
        "",
        *[f"- {note}" for note in card["notes"]],
        "",
        "## Validity checks",
        "",
        *([f"- {check.line()}" for check in validity] or ["- none recorded"]),
        "",
        "## Files",
        "",
        "| file | bytes | sha256 |",
        "| --- | --- | --- |",
        *[f"| `{name}` | {entry['bytes']:,} | `{entry['sha256']}` |" for name, entry in card["files"].items()],
        "",
    ]
    return "\n".join(lines)


def model_card(inputs: CardInputs) -> dict[str, str]:
    """The contents of model_card.json and model_card.md by file name, for the caller to write beside
    ``inputs.files``."""
    card = card_document(inputs)
    return {CARD_JSON: json.dumps(card, indent=2), CARD_MD: card_markdown(card, inputs.meta, inputs.validity)}


# what a user's own code calls to ship a model and read it back; the in-memory byte forms, the file checks and
# the card's pieces serve `wemem apply` and the audit
__all__ = [
    "ONNX_TOLERANCE",
    "ArtifactMeta",
    "CardFigure",
    "CardInputs",
    "Estimate",
    "check_onnx",
    "dense_tensors",
    "export_onnx",
    "fold_masks",
    "load_safetensors",
    "load_sparse",
    "load_sparse_meta",
    "measured_sparsity",
    "model_card",
    "onnx_outputs",
    "save_safetensors",
    "save_sparse",
    "sparse_tensors",
]
