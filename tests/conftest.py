"""Shared fixtures: a tiny digits experiment (cached once per test session) and one small Ray per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from wemem.config import ExperimentConfig, PruningConfig
from wemem.training import TrainConfig

# Tiny models on 2 cores: one intra-op thread is many times faster than two threads fighting Ray's workers.
torch.set_num_threads(1)

TINY_TRAIN = TrainConfig(pretrain_epochs=6, finetune_epochs=3, patience=2)


@pytest.fixture(scope="session")
def tiny_config() -> ExperimentConfig:
    return ExperimentConfig(dataset="digits", model="columnfc", seed=7, shadows=2, train=TINY_TRAIN, memscore_models=2)


@pytest.fixture(scope="session")
def tiny_pruning() -> PruningConfig:
    return PruningConfig(sparsity=0.6, steps=2)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("wemem-cache")


@pytest.fixture(scope="session")
def tiny_assets(tiny_config: ExperimentConfig, cache_dir: Path):
    from wemem.assets import prepare_assets

    return prepare_assets(tiny_config, cache_dir)


@pytest.fixture(scope="session")
def ray_session():
    """A real small Ray (2 CPUs, no dashboard), started once for the whole test session."""
    from search.execution._cluster import init_ray

    init_ray(num_cpus=2)
    yield
    import ray

    ray.shutdown()


@pytest.fixture(autouse=True)
def _isolated_storage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WEMEM_STORAGE", raising=False)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
