"""Setting-independent work, computed once per (dataset, model, seed, K, training config) and cached on disk.

Layout: ``CACHE_DIR/<config key>/`` holds ``config.json``, ``split.pt``, ``pretrained.pt`` (victim and shadow
state dicts), ``pretrained_accuracy.json`` and ``memscores.csv``. Each file has a ``NAME.sha256`` sidecar written
after it; a file whose checksum is missing or wrong (a crash mid-write, a truncated copy) is logged and
recomputed. A file lock makes concurrent launchers compute each piece once.

The cache is the launcher's own reuse between runs. Jobs receive the assets (dataset tensors, split, weights,
mem-scores) as arguments -- the search layer ships them once through Ray's object store -- so worker machines
need neither this folder nor the data root.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from filelock import FileLock

from .config import ExperimentConfig
from .data import ModelSplit, Pools, StudySplit, make_study_split
from .faults import failpoint
from .files import Content, check_writable_folder, create_folder, write_atomically
from .memscore import ImportOrder, check_memscore_order, compute_memscores, memscores_csv_text, read_memscores_csv
from .models import check_model_fits, fit_checkpoint
from .parallel import MapFn, job_seed, serial_map
from .training import accuracy, make_adam, on_training_device, place_model, train_round
from .validity import Check, checkpoint_check, checkpoint_outcomes, resolution_check

Echo = Callable[[str], None]  # where progress lines go (print, or a logger's method)
T = TypeVar("T")


def cache_path(config: ExperimentConfig, cache_dir: str | Path) -> Path:
    return Path(cache_dir) / config.key()


def memscore_path(config: ExperimentConfig, cache_dir: str | Path) -> Path:
    return cache_path(config, cache_dir) / "memscores.csv"


@dataclass(frozen=True)
class StudyAssets:
    config: ExperimentConfig
    pools: Pools
    split: StudySplit
    pretrained: dict[str, dict[str, torch.Tensor]]
    memscores: torch.Tensor
    pretrained_accuracy: dict[str, float]
    fingerprint: str  # content hash of everything above: equal fingerprints, identical assets
    # wall seconds of the pieces as recorded when computed (read by the launcher: workers never see the cache)
    timings: dict[str, float] = field(default_factory=dict, compare=False)


# ------------------------------------------------------------------------------------------ fingerprints


def content_fingerprint(*parts: Any) -> str:
    """SHA-256 over tensors' and arrays' bytes (with dtype and shape), walking dataclasses, dicts and sequences."""
    digest = hashlib.sha256()

    def feed(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().contiguous().numpy()
        if isinstance(value, np.ndarray):
            digest.update(f"array{value.dtype}{value.shape}".encode())
            digest.update(np.ascontiguousarray(value).data)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            digest.update(type(value).__name__.encode())
            for f in dataclasses.fields(value):
                digest.update(f.name.encode())
                feed(getattr(value, f.name))
        elif isinstance(value, dict):
            for key in sorted(value, key=str):
                digest.update(repr(key).encode())
                feed(value[key])
        elif isinstance(value, (list, tuple)):
            digest.update(f"seq{len(value)}".encode())
            for item in value:
                feed(item)
        else:
            digest.update(repr(value).encode())

    for part in parts:
        feed(part)
    return digest.hexdigest()


# ------------------------------------------------------------------------------------- checked cache files


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checked(path: Path, content: Content) -> None:
    """Write a cache file atomically, then its checksum sidecar (a crash between the two reads as corrupt).

    ``content`` is bytes or text where possible: a full disk then fails in our own write, as a clear error,
    rather than inside a library's stream (torch says only "basic_ios::clear: iostream error")."""
    write_atomically(path, content)
    write_atomically(_sidecar(path), _file_sha256(path) + "\n")


def load_checked(path: Path, read: Callable[[Path], T], log: Echo) -> T | None:
    """The decoded file when it exists and matches its checksum; otherwise None (after logging why)."""
    if not path.exists():
        return None
    sidecar = _sidecar(path)
    expected = sidecar.read_text().strip() if sidecar.exists() else None
    problem = (
        "it has no checksum"
        if expected is None
        else "its checksum does not match (truncated or corrupt)"
        if expected != _file_sha256(path)
        else None
    )
    if problem is None:
        try:
            return read(path)
        except Exception as error:  # checksum fine but unreadable, e.g. written by an incompatible version
            problem = f"it cannot be read ({type(error).__name__}: {error})"
    log(f"cache file {path} is discarded because {problem}; recomputing it")
    path.unlink(missing_ok=True)
    sidecar.unlink(missing_ok=True)
    return None


def _torch_bytes(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _json_text(obj: object) -> str:
    return json.dumps(obj, indent=2)


def _torch_read(path: Path) -> Any:
    return torch.load(io.BytesIO(path.read_bytes()), weights_only=True)


# ------------------------------------------------------------------------------------------ the jobs


def pretrain(config: ExperimentConfig, pools: Pools, split: ModelSplit, seed: int) -> dict[str, torch.Tensor]:
    """Train one model from its initialization with early stopping (SPEC section 4); return best-dev weights."""
    from .defenses.base import Defense, DefenseContext, NoSettings

    torch.manual_seed(seed)
    pools = on_training_device(pools)
    model = place_model(config.new_model(pools), pools.x.device, config.train)
    defense = Defense[NoSettings]()  # plain fine-tuning
    defense.bind(DefenseContext(pools, split.train, split.dev, None, config.train, seed))
    generator = torch.Generator().manual_seed(seed)
    result = train_round(
        model,
        make_adam(model, config.train),
        pools,
        split.dev,
        defense,
        None,
        config.train.pretrain_epochs,
        config.train.patience,
        generator,
    )
    return {k: v.cpu() for k, v in result.best_state.items()}


def test_accuracy_job(
    config: ExperimentConfig, pools: Pools, split: ModelSplit, state: dict[str, torch.Tensor]
) -> float:
    """Test accuracy of one model's weights on its own test set."""
    pools = on_training_device(pools)
    model = place_model(config.new_model(pools), pools.x.device, config.train)
    model.load_state_dict(state)
    return accuracy(model, pools, split.test)


def pretrain_job(
    config: ExperimentConfig, pools: Pools, split: ModelSplit, model_index: int
) -> tuple[dict[str, torch.Tensor], float]:
    """Pretrain one model of the study (victim = 0, shadows 1..K) and measure its test accuracy."""
    state = pretrain(config, pools, split, job_seed(config.seed, "pretrain", model_index))
    return state, test_accuracy_job(config, pools, split, state)


# ---------------------------------------------------------------------------------------- preparation


def _read_split(path: Path) -> StudySplit:
    return StudySplit.from_state(_torch_read(path))


def _split_dict(split: StudySplit) -> dict[str, Any]:
    return split.to_state()


def save_memscores(scores: torch.Tensor, config: ExperimentConfig, cache_dir: str | Path) -> Path:
    """Install mem-scores in the study cache (checksummed like every cache file)."""
    path = memscore_path(config, cache_dir)
    create_folder(path.parent, "--cache-dir")
    save_checked(path, memscores_csv_text(scores))
    return path


def shared_timings(config: ExperimentConfig, cache_dir: str | Path) -> dict[str, float]:
    """Wall seconds of the setting-independent pieces, as recorded when each was computed (``timings.json``);
    a piece that was imported (mem-scores), or whose cache entry has no timing, is absent (timings are
    information: a cache entry is never recomputed for one)."""
    return _read_timings(cache_path(config, cache_dir))


def _read_timings(directory: Path) -> dict[str, float]:
    try:
        return json.loads((directory / "timings.json").read_text())
    except (OSError, ValueError):  # absent or damaged: timings are information, never a reason to fail
        return {}


def _record_timing(directory: Path, piece: str, seconds: float) -> None:
    write_atomically(directory / "timings.json", _json_text({**_read_timings(directory), piece: seconds}))


def check_inputs(config: ExperimentConfig, cache_dir: str | Path) -> Pools:
    """What the shared work needs, checked before anything is created or started: the dataset (loaded; the
    loaders name the file and the fix), the model against its samples, the checkpoint against the model, and a
    writable cache folder."""
    pools = config.load_pools()
    check_model_fits(config.model, pools.input_shape, pools.num_classes, config.base_dir)
    if config.checkpoint is not None:
        victim_checkpoint(config, pools)
    check_writable_folder(cache_dir, "the cache folder (--cache-dir)")
    return pools


def victim_checkpoint(config: ExperimentConfig, pools: Pools) -> dict[str, torch.Tensor]:
    """The user's trained victim weights ([model] checkpoint), checked against the model built for the data."""
    if config.checkpoint is None:
        raise ValueError("victim_checkpoint needs a config with a [model] checkpoint")
    return fit_checkpoint(config.checkpoint, config.new_model(pools), config.model)


def victim_non_member_targets(config: ExperimentConfig, pools: Pools) -> int:
    """How many non-members the victim's balanced target set holds (the split is cheap: seeded permutations)."""
    victim = make_study_split(pools, config.seed, config.shadows).victim
    return min(len(victim.train), len(victim.test))


def input_checks(config: ExperimentConfig, pools: Pools, privacy_metric: str) -> list[Check]:
    """The validity checks whose inputs exist before anything trains: a checkpoint victim's accuracy on its
    members and on the other samples, and whether the leakage metric resolves on the victim's targets."""
    checks = []
    if config.checkpoint is not None:
        model = config.new_model(pools)
        model.load_state_dict(victim_checkpoint(config, pools))
        outcomes = checkpoint_outcomes(model, pools.x, pools.y, pools.members)
        checks.append(checkpoint_check(*outcomes, checkpoint=f"the checkpoint {Path(config.checkpoint).name}"))
    checks.append(resolution_check(privacy_metric, victim_non_member_targets(config, pools)))
    return checks


def pretrained_models(
    config: ExperimentConfig, pools: Pools, models: list[tuple[str, ModelSplit]], map_fn: MapFn, log: Echo
) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, float]]:
    """Every model's pretrained weights and test accuracy. With a checkpoint the victim is the user's trained
    model, not pretrained here (its test accuracy is measured); the shadows are always trained by the protocol."""
    from_checkpoint = config.checkpoint is not None
    jobs = [(config, pools, s, i) for i, (_, s) in enumerate(models) if not (from_checkpoint and i == 0)]
    outputs = list(map_fn(pretrain_job, jobs))
    if from_checkpoint:
        state = victim_checkpoint(config, pools)
        outputs.insert(0, (state, map_fn(test_accuracy_job, [(config, pools, models[0][1], state)])[0]))
        log(f"victim: the trained model of {config.checkpoint} (not pretrained here)")
    return (
        {name: state for (name, _), (state, _) in zip(models, outputs)},
        {name: acc for (name, _), (_, acc) in zip(models, outputs)},
    )


def prepare_assets(
    config: ExperimentConfig, cache_dir: str | Path, map_fn: MapFn = serial_map, log: Echo = lambda message: None
) -> StudyAssets:
    """Compute whatever of split, pretrained models and mem-scores is missing (or corrupt) in the cache.

    The dataset is read here, in the launcher; the training jobs run through ``map_fn`` and receive the data
    as arguments.
    """
    directory = cache_path(config, cache_dir)
    pools = config.load_pools()
    create_folder(directory, "--cache-dir")  # after the data is checked: bad data leaves no empty cache folder
    with FileLock(str(directory / ".lock")):
        write_atomically(directory / "config.json", json.dumps(config.to_dict(), indent=2, sort_keys=True))
        split_file = directory / "split.pt"
        split = load_checked(split_file, _read_split, log)
        if split is None:
            start = time.perf_counter()
            split = make_study_split(pools, config.seed, config.shadows)
            save_checked(split_file, _torch_bytes(_split_dict(split)))
            _record_timing(directory, "split", time.perf_counter() - start)
            log(f"computed split: |T|={pools.n_train} |E|={len(pools.y) - pools.n_train}")
            failpoint("after_split")
        else:
            log(f"cache hit: split ({directory})")
        models = split.models()

        pretrained_file, accuracy_file = directory / "pretrained.pt", directory / "pretrained_accuracy.json"
        states = load_checked(pretrained_file, _torch_read, log)
        accuracies = load_checked(accuracy_file, lambda p: json.loads(p.read_text()), log)
        if states is None:
            start = time.perf_counter()
            states, accuracies = pretrained_models(config, pools, models, map_fn, log)
            save_checked(pretrained_file, _torch_bytes(states))
            save_checked(accuracy_file, _json_text(accuracies))
            _record_timing(directory, "pretraining", time.perf_counter() - start)
            log(f"pretrained {'' if config.checkpoint else 'victim and '}{config.shadows} shadows")
        elif accuracies is None:  # measured on the workers too: the launcher may have no GPU
            accuracies = dict(
                zip(states, map_fn(test_accuracy_job, [(config, pools, s, states[name]) for name, s in models]))
            )
            save_checked(accuracy_file, _json_text(accuracies))
            log("cache hit: pretrained victim and shadows (test accuracies re-measured)")
        else:
            log("cache hit: pretrained victim and shadows")

        memscore_file = memscore_path(config, cache_dir)
        scores = load_checked(memscore_file, lambda p: read_memscores_csv(p, expected_length=pools.n_train), log)
        if scores is None:
            start = time.perf_counter()
            scores = compute_memscores(config, pools, map_fn)
            save_memscores(scores, config, cache_dir)
            _record_timing(directory, "memscores", time.perf_counter() - start)
            log(f"computed mem-scores with {config.memscore_models} models")
        else:
            log("cache hit: mem-scores")
    # content only (not paths or names), so launchers reading the same data from different folders agree
    fingerprint = content_fingerprint(pools.x, pools.y, pools.n_train, split, states, scores, accuracies)
    return StudyAssets(config, pools, split, states, scores, accuracies, fingerprint, shared_timings(config, cache_dir))


def import_memscores(
    config: ExperimentConfig, cache_dir: str | Path, csv_file: str | Path, order: ImportOrder = "auto"
) -> torch.Tensor:
    """Validate a mem-score CSV against the dataset (length, values, row order) and install it in the study cache."""
    pools = config.load_pools()
    scores = read_memscores_csv(csv_file, expected_length=pools.n_train)
    check_memscore_order(csv_file, pools, config.dataset, order)
    save_memscores(scores, config, cache_dir)
    return scores


__all__ = [
    "StudyAssets",
    "check_inputs",
    "input_checks",
    "victim_non_member_targets",
    "prepare_assets",
    "shared_timings",
    "cache_path",
    "memscore_path",
    "import_memscores",
    "save_memscores",
    "save_checked",
    "load_checked",
    "content_fingerprint",
]
