"""A shipped model as a black box: what an attacker observes of an ONNX or safetensors file.

The outputs are derived from the file exactly as the engine derives a pruned model's deployed outputs from its
forward (:class:`wemem.pipeline.PruningRun`): log-softmax of the logits over the whole pool in batches of 1,024
rows, and for SAMIA the output sensitivities measured by perturbed queries on the victim's attack targets with the
victim's own seed. So a safetensors file of the model the engine evaluated gives the engine's very numbers, and an
ONNX file gives them up to onnxruntime's float rounding (see :data:`wemem.artifact.ONNX_TOLERANCE`).

A defense that transforms the outputs at serving time (HAMP's output_log_probs) is not in a file: a file answers
with its network's softmax, and that is what is audited.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from .artifact import ArtifactMeta, artifact_meta, load_safetensors, measured_sparsity, onnx_session
from .assets import StudyAssets
from .attacks.base import DeployedProbabilities, probed_sensitivity
from .config import ExperimentConfig
from .data import Pools
from .errors import WememError, capped
from .models import prunable_parameters
from .pipeline import PrunedModel, pruning_seed, sensitivity_rows
from .plugins import file_sha256

ArtifactKind = Literal["onnx", "safetensors"]
KINDS: dict[str, ArtifactKind] = {".onnx": "onnx", ".safetensors": "safetensors"}
OUTPUT_BATCH = 1024  # rows per query, as wemem.training.predict_log_probs batches the engine's deployed outputs

Logits = Callable[[torch.Tensor], torch.Tensor]  # a batch of inputs -> the network's logits
Weights = dict[str, torch.Tensor]  # a file's tensors by name


@dataclass(frozen=True)
class DeployedArtifact:
    """A model file as shipped: its bytes' SHA-256, its metadata (None: written without wemem's), the sparsity
    of the study model's prunable weights in it (None: the file names no tensor as the study's model does), and
    its forward as a black box."""

    path: Path
    kind: ArtifactKind
    sha256: str
    meta: ArtifactMeta | None
    layer_sparsity: dict[str, float]
    sparsity: float | None
    logits: Logits

    @torch.no_grad()
    def log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """The deployed log-probabilities on ``x``, batched as the engine batches them."""
        return torch.cat([torch.log_softmax(self.logits(batch), dim=1) for batch in torch.split(x, OUTPUT_BATCH)])

    @property
    def probabilities(self) -> DeployedProbabilities:
        return lambda x: torch.exp(torch.log_softmax(self.logits(x), dim=1))


def artifact_kind(path: Path) -> ArtifactKind:
    kind = KINDS.get(path.suffix.lower())
    if kind is None:
        raise WememError(
            f"{path}: an artifact is a .onnx or .safetensors file (the model.onnx or model.safetensors "
            f"`wemem apply` writes), not a {path.suffix or 'suffix-less'} file"
        )
    if not path.is_file():
        raise WememError(f"{path} {'is a folder' if path.is_dir() else 'does not exist'}; give the model file")
    return kind


def study_model(config: ExperimentConfig, pools: Pools) -> torch.nn.Module:
    """The study's network for the pools, built without touching the caller's torch RNG (its initial weights are
    all replaced by the file's)."""
    with torch.random.fork_rng(devices=[]):
        return config.new_model(pools).eval()


def shape_problems(expected: Mapping[str, torch.Size], given: Mapping[str, tuple[int, ...]]) -> list[str]:
    """Each tensor the study's model has and the file lacks, has in another shape, or has in excess."""
    wrong = [
        f"{name}: expected {list(shape)}, the file has {list(given[name])}"
        for name, shape in expected.items()
        if name in given and tuple(given[name]) != tuple(shape)
    ]
    missing = [
        f"{name}: expected {list(shape)}, missing from the file"
        for name, shape in expected.items()
        if name not in given
    ]
    extra = [f"{name}: in the file, not in the study's model" for name in given if name not in expected]
    return wrong + missing + extra


def sparsities(weights: Weights, prunable: list[str]) -> tuple[dict[str, float], float | None]:
    """Per-layer and overall fraction of exactly-zero entries of the prunable weights (None overall when the file
    lacks one of them by name)."""
    if not all(name in weights for name in prunable):
        return {}, None
    layers = {name: float((weights[name] == 0).sum()) / weights[name].numel() for name in prunable}
    return layers, measured_sparsity(weights, prunable)


def open_safetensors(
    path: Path, model: torch.nn.Module, config: ExperimentConfig, pools: Pools
) -> tuple[ArtifactMeta | None, Weights, Logits]:
    """The file's tensors loaded strictly into the study's ``model``: every tensor of it, of its shape."""
    state, meta = load_safetensors(path)
    expected = {name: tensor.shape for name, tensor in model.state_dict().items()}
    problems = shape_problems(expected, {name: tuple(tensor.shape) for name, tensor in state.items()})
    if problems:
        raise WememError(
            f"{path} does not fit the study's model {config.model} for {config.dataset} (input "
            f"{list(pools.input_shape)}, {pools.num_classes} classes): {'; '.join(capped(problems))}"
        )
    model.load_state_dict(state, strict=True)
    return meta, state, model


def onnx_dimensions(value_info: object) -> list[int | str]:
    """The dimensions of a graph input or output: a size, or the name of a dynamic axis."""
    dims = value_info.type.tensor_type.shape.dim  # type: ignore[attr-defined]
    return [dim.dim_value if dim.HasField("dim_value") else dim.dim_param for dim in dims]


def open_onnx(path: Path, pools: Pools) -> tuple[ArtifactMeta | None, Weights, Logits]:
    import onnx
    from onnx import numpy_helper

    # one session for every query: SAMIA's probes query thousands of batches, and a session takes milliseconds
    # to build (wemem.artifact.onnx_outputs builds one per call)
    session = onnx_session(path)  # a file onnxruntime cannot run is refused here, before it is parsed further
    graph = onnx.load(str(path))
    inputs = {value.name: onnx_dimensions(value) for value in graph.graph.input}
    outputs = {value.name: onnx_dimensions(value) for value in graph.graph.output}
    expected_in, expected_out = ["batch", *pools.input_shape], ["batch", pools.num_classes]
    given_in, given_out = inputs.get("input"), outputs.get("output")
    if given_in is None or given_out is None or given_in[1:] != expected_in[1:] or given_out[1:] != expected_out[1:]:
        raise WememError(
            f"{path} does not take the study's samples: the study's data needs input 'input' {expected_in} and "
            f"output 'output' {expected_out}; the graph has inputs {inputs} and outputs {outputs}"
        )
    meta = artifact_meta({prop.key: prop.value for prop in graph.metadata_props}, str(path))
    # copies: the arrays onnx hands out are read-only views of its buffers
    weights = {
        tensor.name: torch.from_numpy(numpy_helper.to_array(tensor).copy()) for tensor in graph.graph.initializer
    }

    def logits(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(["output"], {"input": x.numpy()})[0])

    return meta, weights, logits


def open_artifact(path: str | Path, config: ExperimentConfig, pools: Pools) -> DeployedArtifact:
    """A model file as the study's data would query it; a WememError when it is not a model, not one of these two
    formats, or does not take the study's samples and classes (naming what was expected and what was given)."""
    path = Path(path)
    kind = artifact_kind(path)
    model = study_model(config, pools)
    meta, weights, logits = open_onnx(path, pools) if kind == "onnx" else open_safetensors(path, model, config, pools)
    layers, overall = sparsities(weights, list(prunable_parameters(model)))
    return DeployedArtifact(path, kind, file_sha256(path), meta, layers, overall, logits)


def deployed_victim(artifact: DeployedArtifact, assets: StudyAssets, sensitivity: bool) -> PrunedModel:
    """The artifact in the victim's place, as the attack stage reads a pruned victim: its outputs over the pool
    and, when an attack reads them, its output sensitivities on the victim's attack targets (draw 0), probed with
    the seed the engine probes the victim with."""
    pools = assets.pools
    log_probs = artifact.log_probs(pools.x)
    name, split = assets.split.models()[0]

    def accuracy(rows: torch.Tensor) -> float:
        """As :func:`wemem.training.accuracy` counts (in float32), so equal outputs give the engine's number."""
        return float((log_probs[rows].argmax(1) == pools.y[rows]).float().mean()) if len(rows) else math.nan

    probed = None
    if sensitivity:
        rows = sensitivity_rows(assets, 0)
        queries = pools.x[torch.as_tensor(rows)]
        measured = probed_sensitivity(artifact.probabilities, queries, pruning_seed(assets, 0)).numpy()
        probed = np.full((len(pools.y), pools.num_classes), np.nan, dtype=measured.dtype)
        probed[rows] = measured
    return PrunedModel(
        name=name,
        test_accuracy=accuracy(split.test),
        dev_accuracy=accuracy(split.dev),
        defense_seconds=0.0,
        rounds=[],
        layer_sparsity=artifact.layer_sparsity,
        report={},
        log_probs=log_probs.numpy(),
        sensitivity=probed,
        train_accuracy=accuracy(split.train),
    )
