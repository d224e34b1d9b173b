"""Plain, hashable configuration of an experiment (the study layer validates user input into these)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from . import plugins
from .data import SPLIT_VERSION, DataOptions, Pools, is_plugin_dataset, load_dataset
from .models import build_model, is_plugin_model
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
    # the user's own data and model (wemem.data.custom, wemem.plugins): a table's label and member columns and the
    # columns left out of its features, the victim's trained weights replacing its pretraining, and the folder
    # plug-ins are imported from first
    label: str | None = None
    member_column: str | None = None
    exclude: tuple[str, ...] = ()
    checkpoint: str | None = None
    base_dir: str | None = field(default=None, compare=False)  # where, not what: like the key, equality ignores it
    # a table encoding to apply instead of fitting one (apply re-encodes a table as the study did); not hashed
    encoding: dict | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        if not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must be a whole number in [0, {MAX_SEED}], got {self.seed}")
        if self.memscore_models < 2 or self.memscore_models % 2:
            raise ValueError(f"memscore_models must be even and >= 2 (complementary pairs), got {self.memscore_models}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ExperimentConfig:
        data = dict(data)
        data["train"] = TrainConfig(**data.get("train", {}))
        data["exclude"] = tuple(data.get("exclude", ()))  # JSON gives a list; the config stays hashable
        return cls(**data)

    def new_model(self, pools: Pools) -> nn.Module:
        """This experiment's model, built for the pools' samples and classes (plug-ins from ``base_dir``)."""
        return build_model(self.model, pools.input_shape, pools.num_classes, self.base_dir)

    def data_options(self) -> DataOptions:
        return DataOptions(
            self.label, self.member_column, self.checkpoint is not None, self.base_dir, self.encoding, self.exclude
        )

    def load_pools(self) -> Pools:
        """This experiment's dataset, with its table, member and plug-in options."""
        return load_dataset(self.dataset, self.data_root, self.seed, self.data_options())

    def plugin_references(self) -> dict[str, str]:
        """The plug-ins named by import path: {"model": ref} and/or {"dataset": ref}."""
        found = {}
        if is_plugin_model(self.model):
            found["model"] = self.model
        if is_plugin_dataset(self.dataset):
            found["dataset"] = self.dataset
        return found

    def own_code(self) -> dict[str, dict[str, Any]]:
        """What an export records of code and weights that live outside the study: each plug-in reference with
        the SHA-256 of every file of it (:func:`wemem.plugins.code_record`), and the checkpoint's."""
        found: dict[str, dict[str, Any]] = {
            kind: plugins.code_record(ref, kind, self.base_dir) for kind, ref in self.plugin_references().items()
        }
        if self.checkpoint is not None:
            found["checkpoint"] = {"path": self.checkpoint, "sha256": plugins.file_sha256(self.checkpoint)}
        return found

    def key(self) -> str:
        """Content hash naming the on-disk cache of the split, pretrained models and mem-scores.

        The split version is part of it: a change of what the split's index sets mean must not reuse caches. So
        are the plug-ins' sources and the checkpoint's bytes (an edited model module must not reuse weights
        trained with the old one), but not the folder they are imported from. Unset own-data fields are left
        out, so adding an own-data field moves no built-in study's key (a stored study's cache stays its own).
        """
        own = ("label", "member_column", "exclude", "checkpoint", "base_dir", "encoding")
        described = {
            k: v for k, v in self.to_dict().items() if k not in own or (v is not None and v != () and k != "base_dir")
        }
        # the digest of each plug-in's files stands for them: their list adds nothing to the key
        sources = {kind: {k: v for k, v in entry.items() if k != "files"} for kind, entry in self.own_code().items()}
        return content_hash({**described, "split_version": SPLIT_VERSION, **({"sources": sources} if sources else {})})


def content_hash(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
