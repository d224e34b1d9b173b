"""The defense interface and registry.

A defense shapes the fine-tuning of every pruning round through four hooks: which steps an epoch takes
(``epoch_steps``), the loss of a step (``loss``), the optimizer step itself (``train_step``) and what the
deployed model answers (``output_log_probs``). A new defense is one module that subclasses ``Defense``, declares
its pydantic ``Settings`` and registers itself with ``@DEFENSES.register("name")``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, Generic, TypeVar, cast

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

from ..data import Pools
from ..errors import WememError, validation_problems
from ..pruning import MaskKeeper, Masks
from ..registry import Registry
from ..training import Step, TrainConfig, make_adam, minibatches, training_autocast
from .space import DeclaredSpace, SpaceParam, Value, declared_space


class NoSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # inf/NaN settings are typos, never values


S = TypeVar("S", bound=BaseModel)  # a defense's settings model


@dataclass(frozen=True)
class DefenseContext:
    """What a defense may know about the model it is fine-tuning."""

    pools: Pools
    train: torch.Tensor  # pool indices of the model's training list L
    dev: torch.Tensor
    memscores: torch.Tensor | None  # one score per sample of T (indexed by pool index < n_train)
    config: TrainConfig
    seed: int

    @property
    def labels(self) -> torch.Tensor:
        return self.pools.y[self.train.to(self.pools.y.device)].cpu()

    @property
    def scores(self) -> torch.Tensor:
        """Every mem-score of the study (a WememError names the fix where the study computed none)."""
        if self.memscores is None:
            raise WememError(
                "this defense needs mem-scores; compute them with `wemem memscore` or enable them in the study"
            )
        return self.memscores

    def scores_of(self, indices: torch.Tensor) -> torch.Tensor:
        return self.scores[indices.cpu()]


class Defense(Generic[S]):
    """Default behaviour: plain fine-tuning (shuffled mini-batches, cross-entropy, Adam with coupled L2).

    A subclass names its settings model twice, as the type parameter (``self.settings`` is typed by it) and as
    ``Settings`` (what validates at run time): ``class PPB(Defense[PPBSettings]): Settings = PPBSettings``.
    """

    name: ClassVar[str]  # the registry name, set by DEFENSES.register (this base class is "none")
    Settings: ClassVar[type[BaseModel]] = NoSettings
    needs_memscores: ClassVar[bool] = False
    # whether forward and loss may run under bf16 autocast on CUDA (TrainConfig.bf16); off where a defense's
    # machinery needs full-precision activations (Opacus' per-example gradients)
    supports_autocast: ClassVar[bool] = True
    # what a study may search (empty: not searchable), in either form docs/own_model.md shows; read it through
    # space(), which reads both
    search_space: ClassVar[DeclaredSpace] = ()
    # the setting a study evaluates first (the paper's reference, or the values usual in a baseline's literature);
    # empty: none
    paper_defaults: ClassVar[Mapping[str, Value]] = MappingProxyType({})

    def __init__(self, settings: BaseModel | Mapping[str, object] | None = None):
        # parse_settings returns an instance of cls.Settings, which a subclass declares as the model of its S; the
        # link is stated here because a ClassVar cannot name a type variable (PEP 526)
        self.settings = cast(S, self.parse_settings(settings or {}))
        self.context: DefenseContext | None = None
        self._mask_keeper: MaskKeeper | None = None

    @classmethod
    def space(cls) -> tuple[SpaceParam, ...]:
        """The defense's search space (a ValueError names a declaration of neither form)."""
        return declared_space(cls.name, cls.search_space)

    @classmethod
    def parse_settings(cls, settings: BaseModel | Mapping[str, object]) -> BaseModel:
        if isinstance(settings, cls.Settings):
            return settings
        try:
            return cls.Settings.model_validate(dict(settings))
        except ValidationError as error:
            problems = "; ".join(validation_problems(error, whole="(settings)"))
            raise WememError(f"invalid settings for defense {cls.name!r}: {problems}") from None

    # -- lifecycle -------------------------------------------------------------------------------------
    def bind(self, context: DefenseContext) -> None:
        """Called once per model before its first pruning round."""
        self.context = context

    def make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        return make_adam(model, self.ctx.config)

    @property
    def ctx(self) -> DefenseContext:
        if self.context is None:
            raise RuntimeError(f"defense {self.name!r} used before bind()")
        return self.context

    # -- hooks -----------------------------------------------------------------------------------------
    def epoch_steps(self, epoch: int, generator: torch.Generator) -> list[Step]:
        return [Step(batch) for batch in minibatches(self.ctx.train, self.ctx.config.batch_size, generator)]

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y)

    def train_step(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, pools: Pools, step: Step, masks: Masks | None
    ) -> torch.Tensor:
        """One step; returns the loss as a device tensor (reading it would synchronize the GPU every batch)."""
        index = step.indices.to(pools.x.device, non_blocking=True)
        x, y = pools.x[index], pools.y[index]
        optimizer.zero_grad(set_to_none=True)
        with training_autocast(x.device, self.ctx.config, self.supports_autocast):
            loss = self.loss(model, x, y, model(x))
        loss.backward()
        with weight_decay_override(optimizer, step.weight_decay):
            optimizer.step()
        if masks is not None:
            self.mask_keeper(model, masks).apply()  # the step moved pruned weights off zero
        return loss.detach()

    def mask_keeper(self, model: nn.Module, masks: Masks) -> MaskKeeper:
        """The keeper of these masks (built once per pruning round: a round's masks are one dict)."""
        if self._mask_keeper is None or not self._mask_keeper.serves(model, masks):
            self._mask_keeper = MaskKeeper(model, masks)
        return self._mask_keeper

    def output_log_probs(self, model: nn.Module, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(logits, dim=1)

    def report(self) -> dict[str, float]:
        """Extra numbers to store with the results (e.g. DP-SGD's epsilon)."""
        return {}


@contextmanager
def weight_decay_override(optimizer: torch.optim.Optimizer, weight_decay: float | None) -> Iterator[None]:
    """Temporarily set every param group's weight decay (RMR's stronger L2 on risky steps)."""
    if weight_decay is None:
        yield
        return
    saved = [group["weight_decay"] for group in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["weight_decay"] = weight_decay
    try:
        yield
    finally:
        for group, value in zip(optimizer.param_groups, saved):
            group["weight_decay"] = value


DEFENSES: Registry[type[Defense[Any]]] = Registry("defense", group="wemem.defenses")
DEFENSES.register("none")(Defense)


@dataclass(frozen=True, eq=False)
class Setting:
    """One defense setting: the defense's registry name and its settings, validated by the defense's own
    ``Settings`` model when the value is made. This one value travels from the study file (or an export, or the
    command line) through the search and the Ray jobs to the training loop; JSON exists only where it is stored.

    ``values`` keeps the settings as the user (or the sampler) gave them, not the model's filled-in defaults, so
    the stored record of a trial and its identity (:meth:`key`) are what was asked for.
    """

    defense: str
    values: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", MappingProxyType(dict(self.values)))
        DEFENSES.get(self.defense).parse_settings(self.values)  # unknown defense or bad settings: WememError now

    def key(self) -> str:
        """The setting's identity: two settings are the same trial exactly when their keys are equal."""
        return f"{self.defense}|{sorted(self.values.items())!r}"

    @property
    def settings(self) -> dict[str, Any]:
        """A plain copy of the values (for JSON and for the defense's constructor)."""
        return dict(self.values)

    def make(self) -> Defense:
        """A fresh defense of this setting (one per model: a defense holds its model's state)."""
        return DEFENSES.get(self.defense)(self.settings)

    def to_json(self) -> dict[str, Any]:
        return {"defense": self.defense, "settings": self.settings}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Setting:
        """A setting from a file a user gives (an export, a study file): validated like any new one."""
        return cls(data["defense"], data.get("settings") or {})

    @classmethod
    def recorded(cls, defense: str, values: Mapping[str, Any]) -> Setting:
        """A setting this tool stored after validating it (a trial's user attributes): read without the defense's
        class, so a study whose plug-in defense is no longer installed still lists, ranks and reports."""
        setting = object.__new__(cls)
        object.__setattr__(setting, "defense", defense)
        object.__setattr__(setting, "values", MappingProxyType(dict(values)))
        return setting

    # equality and hash both follow key(): 1 and 1.0 compare equal in a dict but are two settings here
    def __eq__(self, other: object) -> bool:
        return isinstance(other, Setting) and self.key() == other.key()

    def __hash__(self) -> int:
        return hash(self.key())

    def __reduce__(self) -> tuple[Any, ...]:  # pickled for Ray as its two fields (a mappingproxy does not pickle)
        return (type(self), (self.defense, self.settings))


UNDEFENDED = "none"


def make_defense(name: str, settings: Mapping[str, object] | None = None) -> Defense[Any]:
    return Setting(name, settings or {}).make()
