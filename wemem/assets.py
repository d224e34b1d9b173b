"""Setting-independent work, computed once per (dataset, model, seed, K, training config) and cached on disk.

Layout: ``CACHE_DIR/<config key>/`` holds ``config.json``, ``split.pt``, ``pretrained.pt`` (victim and shadow
state dicts), ``pretrained_accuracy.json`` and ``memscores.csv``. A file lock makes concurrent launchers compute each piece once; worker
processes load the pieces once per process (memoized) instead of receiving them with every job.
"""

from __future__ import annotations

import functools
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from filelock import FileLock

from .config import ExperimentConfig
from .data import ModelSplit, Pools, StudySplit, cached_pools, load_dataset, make_study_split
from .memscore import compute_memscores, read_memscores_csv, write_memscores_csv
from .models import build_model
from .parallel import MapFn, job_seed, serial_map
from .training import accuracy, default_device, make_adam, train_round

Log = Callable[[str], None]


def cache_path(config: ExperimentConfig, cache_dir: str | Path) -> Path:
    return Path(cache_dir) / config.key()


def memscore_path(config: ExperimentConfig, cache_dir: str | Path) -> Path:
    return cache_path(config, cache_dir) / "memscores.csv"


def test_accuracies(config: ExperimentConfig, pools: Pools, split: StudySplit,
                    states: dict[str, dict[str, torch.Tensor]]) -> dict[str, float]:
    """Test accuracy of each model's weights on its own test set."""
    accuracies = {}
    for name, model_split in split.models():
        model = build_model(config.model, pools.input_shape, pools.num_classes).to(pools.x.device)
        model.load_state_dict(states[name])
        accuracies[name] = accuracy(model, pools, model_split.test)
    return accuracies


@dataclass(frozen=True)
class StudyAssets:
    config: ExperimentConfig
    pools: Pools
    split: StudySplit
    pretrained: dict[str, dict[str, torch.Tensor]]
    memscores: torch.Tensor
    pretrained_accuracy: dict[str, float]


# ------------------------------------------------------------------------------------------ pretraining


def pretrain(config: ExperimentConfig, pools: Pools, split: ModelSplit, seed: int) -> dict[str, torch.Tensor]:
    """Train one model from its initialization with early stopping (SPEC section 4); return best-dev weights."""
    from .defenses.base import Defense, DefenseContext

    torch.manual_seed(seed)
    model = build_model(config.model, pools.input_shape, pools.num_classes).to(pools.x.device)
    defense = Defense()
    defense.bind(DefenseContext(pools, split.train, split.dev, None, config.train, seed))
    generator = torch.Generator().manual_seed(seed)
    result = train_round(model, make_adam(model, config.train), pools, split.dev, defense, None,
                         config.train.pretrain_epochs, config.train.patience, generator)
    return {k: v.cpu() for k, v in result.best_state.items()}


def pretrain_job(config: ExperimentConfig, cache_dir: str, model_index: int) -> dict[str, torch.Tensor]:
    pools, split = load_data(config, cache_dir)
    name, model_split = split.models()[model_index]
    return pretrain(config, pools, model_split, job_seed(config.seed, "pretrain", model_index))


# ------------------------------------------------------------------------------------------- caching


def load_data(config: ExperimentConfig, cache_dir: str | Path) -> tuple[Pools, StudySplit]:
    """The dataset (on the training device) and the study split, loaded once per process."""
    pools = cached_pools(config.dataset, config.data_root, config.seed, str(default_device()))
    return pools, _load_split(str(cache_path(config, cache_dir) / "split.pt"))


@functools.lru_cache(maxsize=4)
def _load_split(path: str) -> StudySplit:
    raw = torch.load(path, weights_only=True)
    to_split = lambda d: ModelSplit(d["train"], d["dev"], d["test"])  # noqa: E731
    return StudySplit(to_split(raw["victim"]), tuple(to_split(s) for s in raw["shadows"]))


def _save_split(split: StudySplit, path: Path) -> None:
    as_dict = lambda s: {"train": s.train, "dev": s.dev, "test": s.test}  # noqa: E731
    atomic_torch_save({"victim": as_dict(split.victim), "shadows": [as_dict(s) for s in split.shadows]}, path)


def atomic_torch_save(obj: object, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def shared_timings(config: ExperimentConfig, cache_dir: str | Path) -> dict[str, float]:
    """Wall seconds of the setting-independent pieces, as recorded when each was computed (``timings.json``);
    a piece that was imported (mem-scores) or cached before timings were recorded is absent."""
    path = cache_path(config, cache_dir) / "timings.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _record_timing(directory: Path, piece: str, seconds: float) -> None:
    path = directory / "timings.json"
    recorded = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**recorded, piece: seconds}, indent=2))


def prepare_assets(config: ExperimentConfig, cache_dir: str | Path, map_fn: MapFn = serial_map,
                   log: Log = lambda message: None) -> StudyAssets:
    """Compute whatever of split, pretrained models and mem-scores is missing from the cache; load the rest."""
    directory = cache_path(config, cache_dir)
    directory.mkdir(parents=True, exist_ok=True)
    with FileLock(str(directory / ".lock")):
        (directory / "config.json").write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True))
        split_file = directory / "split.pt"
        if split_file.exists():
            log(f"cache hit: split ({directory})")
        else:
            start = time.perf_counter()
            pools = load_dataset(config.dataset, config.data_root, config.seed)
            _save_split(make_study_split(pools, config.seed, config.shadows), split_file)
            _record_timing(directory, "split", time.perf_counter() - start)
            log(f"computed split: |T|={pools.n_train} |E|={len(pools.y) - pools.n_train}")
        pools, split = load_data(config, cache_dir)

        pretrained_file = directory / "pretrained.pt"
        if pretrained_file.exists():
            log("cache hit: pretrained victim and shadows")
        else:
            start = time.perf_counter()
            names = [name for name, _ in split.models()]
            states = map_fn(pretrain_job, [(config, str(cache_dir), i) for i in range(len(names))])
            atomic_torch_save(dict(zip(names, states)), pretrained_file)
            _record_timing(directory, "pretraining", time.perf_counter() - start)
            log(f"pretrained victim and {config.shadows} shadows")
        accuracy_file = directory / "pretrained_accuracy.json"
        if not accuracy_file.exists():  # measured once here, not in every worker that loads the assets
            states = torch.load(pretrained_file, weights_only=True)
            accuracy_file.write_text(json.dumps(test_accuracies(config, pools, split, states), indent=2))

        memscore_file = memscore_path(config, cache_dir)
        if memscore_file.exists():
            log("cache hit: mem-scores")
        else:
            start = time.perf_counter()
            scores = compute_memscores(config, map_fn)
            write_memscores_csv(scores, memscore_file)
            _record_timing(directory, "memscores", time.perf_counter() - start)
            log(f"computed mem-scores with {config.memscore_models} models")
    return load_assets(config, cache_dir)


def load_assets(config: ExperimentConfig, cache_dir: str | Path) -> StudyAssets:
    return _load_assets(config, str(cache_dir))


@functools.lru_cache(maxsize=4)
def _load_assets(config: ExperimentConfig, cache_dir: str) -> StudyAssets:
    directory = cache_path(config, cache_dir)
    pools, split = load_data(config, cache_dir)
    pretrained = torch.load(directory / "pretrained.pt", weights_only=True)
    memscores = read_memscores_csv(memscore_path(config, cache_dir), expected_length=pools.n_train)
    accuracies = json.loads((directory / "pretrained_accuracy.json").read_text())
    return StudyAssets(config, pools, split, pretrained, memscores, accuracies)


def import_memscores(config: ExperimentConfig, cache_dir: str | Path, csv_file: str | Path) -> torch.Tensor:
    """Validate a mem-score CSV against the dataset and install it in the study cache."""
    pools = load_dataset(config.dataset, config.data_root, config.seed)
    scores = read_memscores_csv(csv_file, expected_length=pools.n_train)
    directory = cache_path(config, cache_dir)
    directory.mkdir(parents=True, exist_ok=True)
    write_memscores_csv(scores, memscore_path(config, cache_dir))
    _load_assets.cache_clear()
    return scores


__all__ = ["StudyAssets", "prepare_assets", "shared_timings", "load_assets", "load_data", "cache_path", "memscore_path",
           "import_memscores"]
