"""Plain, hashable configuration of an experiment (the study layer validates user input into these)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from .data import SPLIT_VERSION
from .training import TrainConfig

# Seeds are offset (seed + k per shadow, + 1000 per confirmation seed) and fed to numpy (non-negative only) and to
# torch generators; one bound for every entry point keeps all of them in range.
MAX_SEED = 2**31 - 1


@dataclass(frozen=True)
class PruningConfig:
    sparsity: float = 0.6
    steps: int = 4
    one_shot: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {self.sparsity}")
        if self.steps < 1:
            raise ValueError(f"pruning steps must be >= 1, got {self.steps}")


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything the setting-independent work depends on: data, model, seed, shadows, training, mem-scores."""

    dataset: str = "digits"
    model: str = "columnfc"
    seed: int = 7
    shadows: int = 5
    data_root: str | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    memscore_models: int = 8

    def __post_init__(self) -> None:
        if not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must be a whole number in [0, {MAX_SEED}], got {self.seed}")
        if self.memscore_models < 2 or self.memscore_models % 2:
            raise ValueError(f"memscore_models must be even and >= 2 (complementary pairs), got {self.memscore_models}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ExperimentConfig":
        data = dict(data)
        data["train"] = TrainConfig(**data.get("train", {}))
        return cls(**data)

    def key(self) -> str:
        """Content hash naming the on-disk cache of the split, pretrained models and mem-scores.

        The split version is part of it: a change of what the split's index sets mean must not reuse caches.
        """
        return content_hash({**self.to_dict(), "split_version": SPLIT_VERSION})


def content_hash(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
