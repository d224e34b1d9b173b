"""A confirmation as values: each setting's per-seed results, its means and intervals over the seeds, its paired
differences from the reference and from the comparison, and the verdicts. Its JSON (the study's ``confirmation``
user attributes, report.json, an export's [confirmation]) is written and read only by :meth:`Confirmation.to_json`
and :meth:`Confirmation.from_json`, in the shape confirmations have always been stored in."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, NotRequired, TypedDict

from ..storage._records import PruningRecord

# the stored keys of a setting's accuracy and leakage (in a confirmation, a reference and a trial's attributes)
UTILITY: Final = "utility"
PRIVACY: Final = "privacy"

# A candidate's role: the undefended reference, a tuned setting, or what tuning is judged against -- the
# paper's default the study enqueued (the best of them) or a setting the user named.
REFERENCE, TUNED, DEFAULT, NAMED = "reference", "tuned", "default", "comparison"

Constraint = Literal["holds", "violated", "uncertain"]  # the accuracy constraint judged on a paired interval
# a leakage_cap study's cap judged on a setting's confirmed leakage interval
CapVerdict = Literal["keeps the cap", "breaks the cap", "cannot say"]


class IntervalJSON(TypedDict):
    mean: float
    low: float
    high: float


@dataclass(frozen=True)
class Interval:
    """A mean over seeds and its two-sided interval (nan bounds: fewer than two seeds)."""

    mean: float
    low: float
    high: float

    @property
    def below_zero(self) -> bool:
        return self.high < 0

    @property
    def above_zero(self) -> bool:
        return self.low > 0

    def negated(self) -> Interval:
        return Interval(-self.mean, -self.high, -self.low)

    def to_json(self) -> IntervalJSON:
        return {"mean": self.mean, "low": self.low, "high": self.high}

    @classmethod
    def from_json(cls, data: Mapping[str, float]) -> Interval:
        return cls(data["mean"], data["low"], data["high"])


class LeakageCapJSON(TypedDict):
    max_leakage: float
    leakage_se_multiple: float


@dataclass(frozen=True)
class LeakageCap:
    """A leakage_cap study's question: the cap tau on the leakage, and the margin z (in a trial's standard errors)
    its trials were held to. A confirmation judges the cap on the interval over fresh seeds instead."""

    max_leakage: float
    leakage_se_multiple: float

    def verdict(self, leakage: Interval) -> CapVerdict:
        """Whether a confirmed leakage interval keeps the cap: all of it at or below tau, all of it above, or it
        straddles tau (nan bounds, one seed: cannot say)."""
        if leakage.high <= self.max_leakage:
            return "keeps the cap"
        if leakage.low > self.max_leakage:
            return "breaks the cap"
        return "cannot say"

    def text(self) -> str:
        return (
            f"leakage cap {self.max_leakage:g} (the search held each trial's leakage + {self.leakage_se_multiple:g} "
            "standard errors at or below it)"
        )

    def to_json(self) -> LeakageCapJSON:
        return {"max_leakage": self.max_leakage, "leakage_se_multiple": self.leakage_se_multiple}

    @classmethod
    def from_json(cls, data: Mapping[str, float]) -> LeakageCap:
        return cls(data["max_leakage"], data["leakage_se_multiple"])


@dataclass(frozen=True)
class SeedResult:
    """One evaluation of a setting on one seed."""

    utility: float
    privacy: float
    strongest_attack: str


@dataclass(frozen=True)
class Reported:
    """The study's own (selected) evaluation of a setting; ``value`` is its objective value (none for the
    reference)."""

    utility: float
    privacy: float
    value: float | None = None

    def to_json(self) -> dict[str, float]:
        return {UTILITY: self.utility, PRIVACY: self.privacy, **({} if self.value is None else {"value": self.value})}

    @classmethod
    def from_json(cls, data: Mapping[str, float]) -> Reported:
        return cls(data[UTILITY], data[PRIVACY], data.get("value"))


@dataclass(frozen=True)
class Paired:
    """A setting's leakage and accuracy minus another setting's, paired by seed (mean and interval)."""

    privacy: Interval
    utility: Interval

    def to_json(self) -> dict[str, IntervalJSON]:
        return {PRIVACY: self.privacy.to_json(), UTILITY: self.utility.to_json()}

    @classmethod
    def from_json(cls, data: Mapping[str, Mapping[str, float]]) -> Paired:
        return cls(Interval.from_json(data[PRIVACY]), Interval.from_json(data[UTILITY]))


class SeedRowJSON(TypedDict):
    seed: int
    utility: float
    privacy: float
    strongest_attack: str


class ConfirmedSettingJSON(TypedDict):
    label: str
    role: str
    defense: str
    settings: Mapping[str, Any]
    per_seed: list[SeedRowJSON]
    utility: IntervalJSON
    privacy: IntervalJSON
    trial_number: NotRequired[int]
    reported: NotRequired[dict[str, float]]
    privacy_difference: NotRequired[IntervalJSON]
    utility_difference: NotRequired[IntervalJSON]
    accuracy_constraint: NotRequired[str]
    vs_comparison: NotRequired[dict[str, IntervalJSON]]
    leakage_cap: NotRequired[str]
    pruning: NotRequired[PruningRecord]


@dataclass(frozen=True)
class ConfirmedSetting:
    """One candidate of a confirmation: its result on each seed, its means and intervals over them, and its
    differences from the reference (none for the reference) and from the comparison (tuned settings only)."""

    label: str
    role: str
    defense: str
    settings: Mapping[str, Any]
    per_seed: tuple[tuple[int, SeedResult], ...]
    utility: Interval
    privacy: Interval
    trial_number: int | None = None
    reported: Reported | None = None
    vs_reference: Paired | None = None
    accuracy_constraint: Constraint | None = None
    vs_comparison: Paired | None = None
    leakage_cap: CapVerdict | None = None  # a leakage_cap study's cap on this setting's confirmed interval
    pruning: PruningRecord | None = None  # the pruning its trial searched and it was confirmed at (None: the study's)

    @property
    def is_reference(self) -> bool:
        return self.label == REFERENCE

    def to_json(self) -> ConfirmedSettingJSON:
        data: ConfirmedSettingJSON = {
            "label": self.label,
            "role": self.role,
            "defense": self.defense,
            "settings": dict(self.settings),
            "per_seed": [
                {"seed": seed, UTILITY: r.utility, PRIVACY: r.privacy, "strongest_attack": r.strongest_attack}
                for seed, r in self.per_seed
            ],
            UTILITY: self.utility.to_json(),
            PRIVACY: self.privacy.to_json(),
        }
        if self.trial_number is not None:
            data["trial_number"] = self.trial_number
        if self.reported is not None:
            data["reported"] = self.reported.to_json()
        if self.vs_reference is not None:
            data["privacy_difference"] = self.vs_reference.privacy.to_json()
            data["utility_difference"] = self.vs_reference.utility.to_json()
        if self.accuracy_constraint is not None:
            data["accuracy_constraint"] = self.accuracy_constraint
        if self.vs_comparison is not None:
            data["vs_comparison"] = self.vs_comparison.to_json()
        if self.leakage_cap is not None:
            data["leakage_cap"] = self.leakage_cap
        if self.pruning is not None:
            data["pruning"] = self.pruning
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ConfirmedSetting:
        differences = ("privacy_difference", "utility_difference")
        return cls(
            data["label"],
            data.get("role", TUNED),
            data["defense"],
            dict(data.get("settings") or {}),
            tuple(
                (row["seed"], SeedResult(row[UTILITY], row[PRIVACY], row["strongest_attack"]))
                for row in data["per_seed"]
            ),
            Interval.from_json(data[UTILITY]),
            Interval.from_json(data[PRIVACY]),
            data.get("trial_number"),
            None if data.get("reported") is None else Reported.from_json(data["reported"]),
            Paired(*(Interval.from_json(data[key]) for key in differences)) if differences[0] in data else None,
            data.get("accuracy_constraint"),
            None if data.get("vs_comparison") is None else Paired.from_json(data["vs_comparison"]),
            data.get("leakage_cap"),
            data.get("pruning"),
        )


class ComparisonJSON(TypedDict):
    label: str
    role: str
    defense: str
    settings: Mapping[str, Any]


@dataclass(frozen=True)
class Comparison:
    """What tuning is judged against: the paper's default the study enqueued, or a setting the user named."""

    label: str
    role: str
    defense: str
    settings: Mapping[str, Any]

    @property
    def is_default(self) -> bool:
        return self.role == DEFAULT

    def to_json(self) -> ComparisonJSON:
        return {"label": self.label, "role": self.role, "defense": self.defense, "settings": dict(self.settings)}


@dataclass(frozen=True)
class Suite:
    """The attacks that judged a confirmation, the ones its leakage is the maximum over (empty: all of them), and
    whether they are the study's own."""

    attacks: tuple[str, ...]
    privacy_attacks: tuple[str, ...] = ()
    study_suite: bool = True

    def key(self) -> str:
        among = self.privacy_attacks
        return ",".join(sorted(self.attacks)) + (f"|leakage over {','.join(sorted(among))}" if among else "")


class ConfirmationJSON(TypedDict):
    seeds: list[int]
    level: float
    delta: float | None
    candidates: list[ConfirmedSettingJSON]
    comparison: NotRequired[ComparisonJSON]
    metric: NotRequired[str]
    attacks: NotRequired[list[str]]
    privacy_attacks: NotRequired[list[str]]
    study_suite: NotRequired[bool]
    verdict: NotRequired[str]
    leakage_cap: NotRequired[LeakageCapJSON]


class ConfirmationSectionJSON(TypedDict, total=False):
    """A :class:`ConfirmationJSON` with its status, or only the status and note."""

    seeds: list[int]
    level: float
    delta: float | None
    candidates: list[ConfirmedSettingJSON]
    comparison: ComparisonJSON
    metric: str
    attacks: list[str]
    privacy_attacks: list[str]
    study_suite: bool
    verdict: str
    leakage_cap: LeakageCapJSON
    status: str
    note: str


@dataclass(frozen=True)
class Confirmation:
    """Every candidate's confirmed figures on the same fresh seeds; ``suite``, ``metric`` and ``verdict`` once the
    confirmation is stored with its study (``suite`` None: stored before suites were recorded, the study's own)."""

    seeds: tuple[int, ...]
    level: float
    delta: float | None
    candidates: tuple[ConfirmedSetting, ...]
    comparison: Comparison | None = None
    metric: str | None = None
    suite: Suite | None = None
    verdict: str | None = None  # the closing sentences (statistics.verdict)
    cap: LeakageCap | None = None  # a leakage_cap study's cap (None: any other mode)

    @property
    def judged_by_others(self) -> bool:
        return self.suite is not None and not self.suite.study_suite

    @property
    def reference(self) -> ConfirmedSetting | None:
        return next((c for c in self.candidates if c.is_reference), None)

    @property
    def best(self) -> ConfirmedSetting | None:
        """The best setting confirmed: the first with a difference from the reference (the study's ranking); under
        a leakage cap the most accurate one whose confirmed interval keeps the cap (None: none keeps it)."""
        settings = [c for c in self.candidates if c.vs_reference is not None]
        if self.cap is None:
            return next(iter(settings), None)
        keeping = [c for c in settings if c.leakage_cap == "keeps the cap"]
        return max(keeping, key=lambda c: c.utility.mean, default=None)

    def entry(self, trial_number: int) -> ConfirmedSetting | None:
        return next((c for c in self.candidates if c.trial_number == trial_number), None)

    def to_json(self) -> ConfirmationJSON:
        data: ConfirmationJSON = {
            "seeds": list(self.seeds),
            "level": self.level,
            "delta": self.delta,
            "candidates": [c.to_json() for c in self.candidates],
        }
        if self.comparison is not None:
            data["comparison"] = self.comparison.to_json()
        if self.metric is not None:
            data["metric"] = self.metric
        if self.suite is not None:
            data["attacks"] = list(self.suite.attacks)
            if self.suite.privacy_attacks:
                data["privacy_attacks"] = list(self.suite.privacy_attacks)
            data["study_suite"] = self.suite.study_suite
        if self.verdict is not None:
            data["verdict"] = self.verdict
        if self.cap is not None:
            data["leakage_cap"] = self.cap.to_json()
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Confirmation:
        comparison = data.get("comparison")
        suite = (
            None
            if "attacks" not in data
            else Suite(tuple(data["attacks"]), tuple(data.get("privacy_attacks") or ()), data.get("study_suite", True))
        )
        return cls(
            tuple(data["seeds"]),
            data.get("level", 0.95),
            data.get("delta"),
            tuple(ConfirmedSetting.from_json(c) for c in data["candidates"]),
            None
            if comparison is None
            else Comparison(
                comparison["label"], comparison["role"], comparison["defense"], dict(comparison["settings"])
            ),
            data.get("metric"),
            suite,
            data.get("verdict"),
            None if data.get("leakage_cap") is None else LeakageCap.from_json(data["leakage_cap"]),
        )


ConfirmationState = Literal["confirmed", "stale", "not confirmed"]


@dataclass(frozen=True)
class ConfirmationStatus:
    """What an export, a report and ``wemem status`` carry of a study's confirmation: its figures (``confirmed``,
    or ``stale`` when a trial became best after them), or ``not confirmed``; ``note`` says what to run."""

    state: ConfirmationState
    confirmation: Confirmation | None = None
    note: str | None = None

    @property
    def confirmed(self) -> bool:
        return self.confirmation is not None

    def to_json(self) -> ConfirmationSectionJSON:
        section = ConfirmationSectionJSON(**(self.confirmation.to_json() if self.confirmation is not None else {}))
        section["status"] = self.state
        if self.note is not None:
            section["note"] = self.note
        return section
