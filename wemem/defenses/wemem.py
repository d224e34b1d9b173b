"""The WeMeM defenses of SPEC section 7: RSW (sliding windows), RMR (risk memory regularization), SWMR (both).

Window sizes are per class and may be given as fractions of each class list (``width_fraction``,
``stride_fraction``) so one setting transfers across datasets, or as sample counts (``width``, ``stride``) as in
the paper's artifact (e.g. CIFAR-10 D=50, W=500).
"""

from __future__ import annotations

import math
from types import MappingProxyType
from typing import Literal, TypeVar

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from ..data import Pools
from ..pruning import Masks
from ..training import Step, minibatches
from .base import DEFENSES, Defense, DefenseContext
from .space import SpaceParam

Order = Literal["h2l", "l2h"]


# ------------------------------------------------------------------------------------ pure algorithms


def ranked_class_lists(
    indices: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor, order: Order
) -> list[torch.Tensor]:
    """pi_c for each class present: the class's indices ranked by mem-score (ties broken by pool index)."""
    lists = []
    for c in torch.unique(labels).tolist():
        members = indices[labels == c]
        member_scores = scores[labels == c]
        by_index = torch.argsort(members, stable=True)
        members, member_scores = members[by_index], member_scores[by_index]
        ranking = torch.argsort(member_scores, descending=(order == "h2l"), stable=True)
        lists.append(members[ranking])
    return lists


def window_sizes(
    class_size: int, width: int | None, stride: int | None, width_fraction: float | None, stride_fraction: float | None
) -> tuple[int, int]:
    """Per-class (W, D) in samples: counts as given, or fractions of the class size (at least one sample)."""
    return (
        in_samples(class_size, "width", width, width_fraction),
        in_samples(class_size, "stride", stride, stride_fraction),
    )


def in_samples(class_size: int, name: str, count: int | None, fraction: float | None) -> int:
    """One window dimension in samples, from its count or its fraction of the class size."""
    if count is not None:
        return count
    if fraction is None:
        raise ValueError(f"give the window's {name} in samples or as a fraction")
    return max(1, round(fraction * class_size))


def sliding_window(class_lists: list[torch.Tensor], sizes: list[tuple[int, int]], epoch: int) -> torch.Tensor:
    """window(e) = union over classes of pi_c[D*e : D*e + W], the end clipped per class.

    **Fix** (SPEC section 7): the reference clipped one shared end across classes.
    """
    parts = [ranked[d * epoch : min(d * epoch + w, len(ranked))] for ranked, (w, d) in zip(class_lists, sizes)]
    parts = [p for p in parts if len(p)]
    return torch.cat(parts) if parts else torch.empty(0, dtype=torch.long)


def epochs_per_sample(width: int, stride: int) -> int:
    """How many epochs of a round one sample appears in at most: ceil(W / D)."""
    return math.ceil(width / stride)


def risk_split(indices: torch.Tensor, scores: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """RMR's split of L: risky R = {m >= tau}, general G = {m < tau}."""
    risky = scores >= tau
    return indices[risky], indices[~risky]


def tau_from_risky_fraction(memscores: torch.Tensor, risky_fraction: float) -> float:
    """The absolute threshold that marks the top ``risky_fraction`` of the study's mem-scores as risky."""
    return float(torch.quantile(memscores.double(), 1.0 - risky_fraction))


# --------------------------------------------------------------------------------------------- settings

MIN_GAP = 0.005  # the room a search space keeps between its lowest stride and its lowest width


def stride_below_width(stride_fraction: float, width_fraction: float, gap: float = 0.0) -> bool:
    """The window rule (SPEC section 10): the stride stays strictly below the width, and ``gap`` below it at
    least (a search space keeps :data:`MIN_GAP`, so every width it samples leaves room for its stride)."""
    return stride_fraction < width_fraction and stride_fraction + gap <= width_fraction


class WindowSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # inf/NaN settings are typos, never values
    order: Order = "h2l"
    width: int | None = Field(None, ge=1, description="window width W in samples per class")
    stride: int | None = Field(None, ge=1, description="stride D in samples per class")
    width_fraction: float | None = Field(None, gt=0, le=1, description="W as a fraction of each class list")
    stride_fraction: float | None = Field(None, gt=0, le=1, description="D as a fraction of each class list")

    @model_validator(mode="after")
    def _one_form_each(self) -> WindowSettings:
        for name in ("width", "stride"):
            given = [getattr(self, name) is not None, getattr(self, f"{name}_fraction") is not None]
            if sum(given) != 1:
                raise ValueError(f"give exactly one of {name} (samples) or {name}_fraction (of each class list)")
        if self.width is not None and self.stride is not None and self.stride > self.width:
            raise ValueError(
                f"stride {self.stride} exceeds width {self.width}: samples between windows would never be trained on"
            )
        if (
            self.width_fraction is not None
            and self.stride_fraction is not None
            and not stride_below_width(self.stride_fraction, self.width_fraction)
        ):
            raise ValueError("stride_fraction must be strictly below width_fraction")
        return self


RmrOptimizer = Literal["two_adam", "single"]


class RiskSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # inf/NaN settings are typos, never values
    lambda_mem: float = Field(0.1, gt=0, description="weight decay on steps over risky samples")
    # default chosen on evidence: see docs/deviations.md (RMR's optimizers) for the comparison
    optimizer: RmrOptimizer = Field(
        "single",
        description="two_adam: the reference's two Adam optimizers (risky steps with weight decay "
        "lambda_mem, general steps with the usual one, each with its own moments); single: "
        "one Adam whose weight decay is lambda_mem during risky steps",
    )
    tau: float | None = Field(None, ge=0, le=1, description="absolute mem-score threshold")
    risky_fraction: float | None = Field(None, gt=0, lt=1, description="tau as the quantile of the study's mem-scores")

    @model_validator(mode="after")
    def _one_threshold(self) -> RiskSettings:
        if (self.tau is None) == (self.risky_fraction is None):
            raise ValueError("give exactly one of tau (absolute mem-score) or risky_fraction (of the mem-scores)")
        return self


class SWMRSettings(WindowSettings, RiskSettings):
    pass


def class_windows(
    indices: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor, settings: WindowSettings
) -> tuple[list[torch.Tensor], list[tuple[int, int]]]:
    """RSW's plan for one training list: each class's ranked list and its window (W, D) in samples."""
    class_lists = ranked_class_lists(indices, labels, scores, settings.order)
    sizes = [
        window_sizes(len(ranked), settings.width, settings.stride, settings.width_fraction, settings.stride_fraction)
        for ranked in class_lists
    ]
    return class_lists, sizes


def risk_threshold(settings: RiskSettings, memscores: torch.Tensor) -> float:
    """RMR's tau: the absolute one given, or the quantile of every mem-score of the study that ``risky_fraction``
    names."""
    if settings.tau is not None:
        return settings.tau
    assert settings.risky_fraction is not None  # RiskSettings holds exactly one of the two (its validator)
    return tau_from_risky_fraction(memscores, settings.risky_fraction)


def risk_batches(
    indices: torch.Tensor, scores: torch.Tensor, tau: float, batch_size: int, generator: torch.Generator
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """RMR's mini-batches of one epoch: the risky part's (trained first, with weight decay lambda_mem), then the
    general part's; ``scores`` are the mem-scores of ``indices``."""
    risky, general = risk_split(indices, scores, tau)
    return minibatches(risky, batch_size, generator), minibatches(general, batch_size, generator)


WS = TypeVar("WS", bound=WindowSettings)  # the settings of a defense with sliding windows
RS = TypeVar("RS", bound=RiskSettings)  # the settings of a defense with risk memory regularization


# ------------------------------------------------------------------------------------------ search spaces

# The window is sampled in a fixed box: the width, and the stride as a fraction of the width (stride_ratio), both
# on log scales (halving a window matters as much at 0.1 as at 0.6). The stride a defense receives,
# stride_fraction = stride_ratio * width_fraction, is derived and clipped to the SPEC's [0.005, 0.2]; with the
# ratio at most 0.5 and the width at least 0.05 it always stays below the width by more than MIN_GAP. Sampling the
# stride first would move the width's lower bound with it, a box TPE's densities model badly.
STRIDE = SpaceParam("stride_fraction", 0.005, 0.2, derived=True)
WINDOW_SPACE = (
    SpaceParam("order", choices=("h2l", "l2h")),
    SpaceParam("width_fraction", 0.05, 0.8, log=True),
    SpaceParam("stride_ratio", 0.02, 0.5, log=True),
    STRIDE,
)
# RMR's optimizer is fixed to the defense's default (see docs/deviations.md for the comparison behind it); a study
# may search both with `optimizer = ["two_adam", "single"]` or fix the other one.
RISK_SPACE = (
    SpaceParam("risky_fraction", 0.01, 0.5, log=True),
    SpaceParam("lambda_mem", 1e-3, 1.0, log=True),
    SpaceParam("optimizer", choices=("two_adam", "single"), fixed=RiskSettings.model_fields["optimizer"].default),
)
# The paper's reference settings (SPEC section 7), as fractions of each class list so they transfer across
# datasets: CIFAR-10 classes hold 2,250 victim samples (W=500 -> 0.22, D=50 -> 0.022, D=100 -> 0.044).
RISK_DEFAULTS = {"lambda_mem": 0.1, "risky_fraction": 0.2}


# ------------------------------------------------------------------------------------------- defenses


class SlidingWindowMixin(Defense[WS]):
    """Per-class ranked lists and window sizes, prepared once per model."""

    def prepare_windows(self, context: DefenseContext) -> None:
        self.class_lists, self.sizes = class_windows(
            context.train.cpu(), context.labels, context.scores_of(context.train), self.settings
        )

    def window(self, epoch: int) -> torch.Tensor:
        return sliding_window(self.class_lists, self.sizes, epoch)


class RiskMixin(Defense[RS]):
    """RMR's risky-first epochs; with ``optimizer = "two_adam"`` risky steps use an Adam of their own.

    Both optimizers are created once per model (``make_optimizer`` runs once, before the first pruning round),
    so each carries its moments across rounds like the single one does, and both go through the same masked
    step of :meth:`Defense.train_step` (masks re-applied after the step).
    """

    risky_optimizer: torch.optim.Optimizer | None = None

    def make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        general = super().make_optimizer(model)
        if self.settings.optimizer == "two_adam":
            config = self.ctx.config
            self.risky_optimizer = torch.optim.Adam(
                model.parameters(), lr=config.lr, weight_decay=self.settings.lambda_mem, fused=True
            )
        return general

    def train_step(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, pools: Pools, step: Step, masks: Masks | None
    ) -> torch.Tensor:
        if self.risky_optimizer is not None and step.weight_decay is not None:  # a risky step (see risk_steps)
            optimizer = self.risky_optimizer
        return super().train_step(model, optimizer, pools, step, masks)

    def prepare_threshold(self, context: DefenseContext) -> None:
        self.tau = risk_threshold(self.settings, context.scores)

    def risk_steps(self, indices: torch.Tensor, generator: torch.Generator) -> list[Step]:
        """All mini-batches of the risky part first (strong L2), then the general part (usual L2).

        Risky steps carry weight decay lambda_mem: an override of the single optimizer, or (two_adam) the
        marker that selects the risky optimizer, whose own weight decay is lambda_mem.
        """
        risky, general = risk_batches(
            indices, self.ctx.scores_of(indices), self.tau, self.ctx.config.batch_size, generator
        )
        return [Step(b, weight_decay=self.settings.lambda_mem) for b in risky] + [Step(b) for b in general]

    def report(self) -> dict[str, float]:
        return {"tau": self.tau}


@DEFENSES.register("rsw")
class RSW(SlidingWindowMixin[WindowSettings]):
    Settings = WindowSettings
    needs_memscores = True
    search_space = WINDOW_SPACE
    paper_defaults = MappingProxyType({"order": "l2h", "width_fraction": 0.22, "stride_fraction": 0.022})

    def bind(self, context: DefenseContext) -> None:
        super().bind(context)
        self.prepare_windows(context)

    def epoch_steps(self, epoch: int, generator: torch.Generator) -> list[Step]:
        return [Step(b) for b in minibatches(self.window(epoch), self.ctx.config.batch_size, generator)]


@DEFENSES.register("rmr")
class RMR(RiskMixin[RiskSettings]):
    Settings = RiskSettings
    needs_memscores = True
    search_space = RISK_SPACE
    paper_defaults = MappingProxyType(RISK_DEFAULTS)

    def bind(self, context: DefenseContext) -> None:
        super().bind(context)
        self.prepare_threshold(context)

    def epoch_steps(self, epoch: int, generator: torch.Generator) -> list[Step]:
        return self.risk_steps(self.ctx.train, generator)


@DEFENSES.register("swmr")
class SWMR(SlidingWindowMixin[SWMRSettings], RiskMixin[SWMRSettings]):
    Settings = SWMRSettings
    needs_memscores = True
    search_space = WINDOW_SPACE + RISK_SPACE
    paper_defaults = MappingProxyType(
        {"order": "h2l", "width_fraction": 0.22, "stride_fraction": 0.044, **RISK_DEFAULTS}
    )

    def bind(self, context: DefenseContext) -> None:
        super().bind(context)
        self.prepare_windows(context)
        self.prepare_threshold(context)

    def epoch_steps(self, epoch: int, generator: torch.Generator) -> list[Step]:
        return self.risk_steps(self.window(epoch), generator)
