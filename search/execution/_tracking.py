"""MLflow tracking: a study as a parent run, each finished trial as a run nested under it (logged as the study is
told its outcome, with its per-target scores), a confirmation as a summary on the parent.

We write runs with MLflow's own ``MlflowClient`` rather than optuna-integration's ``MLflowCallback``: that is an
``optimize()`` callback, and our launcher never calls ``optimize()`` (its Tune searcher asks and tells the study
itself, so the callback would never fire). The client also writes each run by its id, without the fluent API's
process-wide "active run", so trials that finish out of order and a user's own active run stay apart.

Tracking is a reporter, never a source of truth: the storage holds every trial whatever MLflow answers. Any
failure of MLflow warns once and turns tracking off for the rest of the command; the study goes on. MLflow is
imported only when tracking is on (it takes seconds), and nothing secret reaches it: the storage URL is logged
masked, and every text logged is scrubbed of the storage's and the tracking URI's credentials.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeGuard, TypeVar

import optuna
from optuna.trial import TrialState

from wemem.assets import Echo
from wemem.uncertainty import INTERVAL_METRICS

from ..exceptions import BadInputError
from ..storage._heartbeat import trial_id_of
from ..storage._records import ROC, TrialMetrics, without_roc
from ..storage._urls import new_sqlite_file, redact, scrub
from ..study import OpenStudy
from ..studyfile import StudyDefinition
from ..studyfile._schema import TrackingSection

if TYPE_CHECKING:  # annotations only: mlflow is imported when tracking is on
    from mlflow import MlflowClient
    from mlflow.store.entities import PagedList

T = TypeVar("T")
ENV = "MLFLOW_TRACKING_URI"
INSTALL = 'pip install "wemem-search[tracking]"'
# MLflow's HTTP client retries a refused connection 7 times with doubling back-off (minutes); a launcher asks
# an unreachable server twice, then warns and runs on. Set only where the user has not chosen otherwise.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
PARENT_RUN_TAG = "mlflow.parentRunId"  # how MLflow nests a run under another (what start_run(nested=True) sets)
STUDY_TAG, STORAGE_TAG, ROLE_TAG, TRIAL_TAG, STATE_TAG = (
    "wemem.study",
    "wemem.storage",
    "wemem.role",
    "wemem.trial",
    "wemem.state",
)
MAX_TAG_CHARS = 5000  # MLflow caps a tag value at 8000 characters (a param at 6000)
SCORES_ARTIFACT = "scores.npz"
RUN_STATUS = {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "KILLED", TrialState.FAIL: "FAILED"}


@dataclass(frozen=True)
class Tracking:
    """Where a command logs, and whether it may start tracking a study not tracked there yet (``--mlflow`` or a
    ``[tracking]`` section may; ``MLFLOW_TRACKING_URI`` alone only continues a study already tracked at it)."""

    uri: str
    experiment: str | None = None  # None: the study's name
    starts: bool = True

    @property
    def shown(self) -> str:
        """The URI with its credentials masked, for every message."""
        return redact(self.uri)


def tracking_of(
    flag: str | None, section: TrackingSection | None, env: Mapping[str, str] = os.environ
) -> Tracking | None:
    """This command's tracking: the URI of ``--mlflow``, else of ``[tracking] mlflow``, else
    ``MLFLOW_TRACKING_URI``. Refuses (before anything is created) an empty ``--mlflow``, a ``[tracking]`` section
    with no URI anywhere, and tracking asked for without MLflow installed."""
    if flag is not None and not flag.strip():
        raise BadInputError("--mlflow takes an MLflow tracking URI, e.g. --mlflow sqlite:///mlflow.db")
    starts = flag is not None or section is not None
    uri = flag or (section.mlflow if section is not None else None) or env.get(ENV) or None
    if uri is None:
        if section is not None:
            raise BadInputError(
                "the study file's [tracking] section names no MLflow URI and MLFLOW_TRACKING_URI is not set; "
                'set [tracking] mlflow = "sqlite:///mlflow.db" (or your server\'s URI) or pass --mlflow URI'
            )
        return None
    if not starts and (importlib.util.find_spec("mlflow") is None or new_sqlite_file(uri) is not None):
        return None  # exported for other work: it never refuses a study, nor creates a tracking store
    if importlib.util.find_spec("mlflow") is None:
        raise BadInputError(f"logging to MLflow ({redact(uri)}) needs mlflow; install it with {INSTALL}")
    return Tracking(uri, section.experiment if section is not None else None, starts)


def metric_name(name: str) -> str:
    """A name MLflow accepts (letters, digits, ``_-. :/``): ``tpr_at_0.1%_fpr`` becomes ``tpr_at_0.1pct_fpr``."""
    return re.sub(r"[^\w\-. :/]", "_", name.replace("%", "pct"))


def _finite(value: object) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def numbers(prefix: str, value: object) -> Iterator[tuple[str, float]]:
    """Every finite number inside ``value`` (nested dicts), named ``prefix.key.key``."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from numbers(f"{prefix}.{key}", item)
    elif _finite(value):
        yield metric_name(prefix), float(value)


def interval_metrics(name: str, value: float, interval: object) -> dict[str, float]:
    """``name`` with its interval as ``name_low`` and ``name_high`` (when the interval holds two numbers)."""
    metrics = {name: value} if _finite(value) else {}
    if isinstance(interval, (list, tuple)) and len(interval) == 2 and all(_finite(v) for v in interval):
        metrics.update({f"{name}_low": float(interval[0]), f"{name}_high": float(interval[1])})
    return metrics


def attack_metrics(attacks: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """Each attack's metrics with their 95% bootstrap intervals and its epsilon lower bound, ``ATTACK.METRIC``."""
    metrics: dict[str, float] = {}
    for attack, figures in attacks.items():
        intervals = figures.get("intervals", {})
        for key in INTERVAL_METRICS:
            if key in figures:
                metrics.update(interval_metrics(metric_name(f"{attack}.{key}"), figures[key], intervals.get(key)))
        bound = figures.get("epsilon_lower_bound", {}).get("value")
        if _finite(bound):
            metrics[f"{attack}.epsilon_lower_bound"] = float(bound)
    return metrics


def trial_metrics(trial: optuna.trial.FrozenTrial, privacy_metric: str) -> dict[str, float]:
    """A trial's figures as MLflow metrics: accuracy, leakage with its interval (the strongest attack's 95%
    bootstrap interval over the targets of the study's privacy metric) and standard error when repeats measured
    it, the objective values, each attack's metrics and the stage timings (``seconds.*``)."""
    m = TrialMetrics.of(trial)
    strongest = m.attacks.get(m.strongest_attack or "", {})
    values = trial.values or []
    figures: dict[str, object] = {
        "accuracy": m.utility,
        "leakage_se": m.privacy_se,
        **{"objective" if len(values) == 1 else f"objective_{i}": v for i, v in enumerate(values)},
    }
    return {
        **{name: value for name, value in figures.items() if _finite(value)},
        **interval_metrics("leakage", m.privacy, strongest.get("intervals", {}).get(privacy_metric)),
        **dict(numbers("seconds", {"defense": m.defense_seconds, **m.timings})),
        **attack_metrics(m.attacks),
    }


def trial_params(trial: optuna.trial.FrozenTrial) -> dict[str, str]:
    """The setting a trial evaluated: its defense and each of its settings by name."""
    m = TrialMetrics.of(trial)
    if m.defense is None:
        return {}
    return {"defense": m.defense, **{key: _text(value) for key, value in m.settings.items()}}


def _text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def roc_points(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """Each attack's ROC points as the trial stored them (``{attack: {"fpr": [...], "tpr": [...]}}``)."""
    return {name: figures[ROC] for name, figures in TrialMetrics.of(trial).attacks.items() if ROC in figures}


def trial_record(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """What the trial stored, ROC points aside: its setting, per-attack figures (with intervals, target counts
    and epsilon bounds), repeats, victim rounds and timings. Per-target scores are not stored with a trial (they
    reach MLflow only from the trial's own report, see :meth:`StudyTracker.log_finished`)."""
    attrs = dict(trial.user_attrs)
    if isinstance(attrs.get("attacks"), Mapping):
        attrs["attacks"] = without_roc(attrs["attacks"])
    return {"number": trial.number, "state": trial.state.name, "params": trial.params, **attrs}


def every(fetch: Callable[[str | None], PagedList[T]]) -> Iterator[T]:
    """Every item of a paged MLflow search, ``fetch(page_token)`` answering one page."""
    token = None
    while True:
        page = fetch(token)
        yield from page
        token = page.token
        if not token:
            return


def _ms(moment: datetime.datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


class StudyTracker:
    """One command's connection to MLflow for one study: finds (or, where it may, starts) the study's parent run,
    then logs trials and confirmations under it. Every MLflow call goes through :meth:`_guarded`."""

    def __init__(self, tracking: Tracking, study_name: str, storage_url: str, echo: Echo):
        self.tracking, self.study_name, self.storage_url, self.echo = tracking, study_name, storage_url, echo
        self.client: MlflowClient | None = None
        self.parent: tuple[str, str] | None = None  # (experiment id, run id) of the study's run
        self.failed = False  # MLflow failed once: warned, and tracking is off for the rest of the command

    @classmethod
    def open(cls, tracking: Tracking | None, opened: OpenStudy, echo: Echo) -> StudyTracker | None:
        """The tracker of ``opened``'s study, or None when tracking is off, MLflow failed (warned), or the study
        is not tracked at an ``MLFLOW_TRACKING_URI`` that may only continue it."""
        if tracking is None:
            return None
        tracker = cls(tracking, opened.name, opened.place.storage_url, echo)
        found = tracker._guarded(lambda: tracker._find_or_start(opened.definition))
        return tracker if found else None

    def masked(self, text: str) -> str:
        """``text`` with the storage's and the tracking URI's secrets replaced by ***."""
        return scrub(scrub(text, self.storage_url), self.tracking.uri)

    def _guarded(self, action: Callable[[], T]) -> T | None:
        """``action()``, or None after one warning when MLflow fails (tracking is then off for this command)."""
        if self.failed:
            return None
        try:
            return action()
        except Exception as error:  # any MLflow or network failure: the study must go on without tracking
            self.failed = True
            self.echo(
                f"warning: MLflow tracking at {self.tracking.shown} failed ({self.masked(str(error))[:300]}); "
                "the study goes on without tracking and keeps every trial in its storage"
            )
            return None

    def _client(self) -> MlflowClient:
        for name, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(name, value)
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking.uri)

    def _find_or_start(self, definition: StudyDefinition) -> bool:
        client = self.client = self._client()
        self.parent = self._find_parent(client)
        if self.parent is None and self.tracking.starts:
            self.parent = self._start_parent(client, definition)
        return self.parent is not None

    def _find_parent(self, client: MlflowClient) -> tuple[str, str] | None:
        """The study's run in any experiment (a study keeps the experiment of its first tracked launch)."""
        experiments = [e.experiment_id for e in every(lambda token: client.search_experiments(page_token=token))]
        if not experiments:
            return None
        runs = client.search_runs(
            experiments, filter_string=f"tags.`{STUDY_TAG}` = '{self.study_name}' and tags.`{ROLE_TAG}` = 'study'"
        )
        storage = redact(self.storage_url)
        run = next((r for r in runs if r.data.tags.get(STORAGE_TAG) == storage), None)
        return None if run is None else (run.info.experiment_id, run.info.run_id)

    def _start_parent(self, client: MlflowClient, definition: StudyDefinition) -> tuple[str, str]:
        name = self.tracking.experiment or self.study_name
        experiment = client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment is not None else client.create_experiment(name)
        objective = definition.objective_config()
        params = {
            "dataset": definition.data.dataset,
            "model": definition.model.name,
            "objective": objective.mode,
            "privacy_metric": objective.privacy_metric,
            "sampler": definition.study.sampler,
            "n_trials": definition.study.n_trials,
            "seed": definition.study.seed,
            "defenses": ",".join(definition.search.defenses),
            "attacks": ",".join(definition.attacks.names),
        }
        run = client.create_run(
            experiment_id,
            run_name=self.study_name,
            tags={STUDY_TAG: self.study_name, STORAGE_TAG: redact(self.storage_url), ROLE_TAG: "study"},
        )
        run_id = run.info.run_id
        client.log_batch(run_id, params=_params({k: self.masked(str(v)) for k, v in params.items()}))
        client.log_text(run_id, self.masked(json.dumps(definition.model_dump(mode="json"), indent=1)), "study.json")
        client.set_terminated(run_id)
        return experiment_id, run_id

    def logged_trials(self) -> set[int]:
        """The numbers of the trials already logged under the study's run (by any launcher)."""
        assert self.client is not None and self.parent is not None
        client, (experiment_id, run_id) = self.client, self.parent
        children = every(
            lambda token: client.search_runs(
                [experiment_id], filter_string=f"tags.`{PARENT_RUN_TAG}` = '{run_id}'", page_token=token
            )
        )
        return {int(run.data.tags[TRIAL_TAG]) for run in children if TRIAL_TAG in run.data.tags}

    def log_trials(self, study: optuna.Study, privacy_metric: str) -> None:
        """Log every finished trial (complete, pruned or failed) not logged yet, by any launcher."""

        def log() -> None:
            logged = self.logged_trials()
            finished = study.get_trials(deepcopy=False, states=tuple(RUN_STATUS))
            new = [t for t in finished if t.number not in logged]
            for trial in new:
                self.log_trial(trial, privacy_metric)
            assert self.parent is not None
            self.echo(
                f"logged {len(new)} trial(s) to MLflow at {self.tracking.shown} (experiment {self.parent[0]}, "
                f"study run {self.parent[1]})"
            )

        self._guarded(log)

    def log_finished(self, opened: OpenStudy, number: int, scores: bytes | None) -> None:
        """Log trial ``number`` of ``opened`` as this launcher has just finished it (with ``scores``, its
        per-target scores as a ``.npz``, when it reported them), unless it is logged already."""

        def log() -> None:
            assert self.client is not None and self.parent is not None
            client, (experiment_id, run_id) = self.client, self.parent
            trial = opened.storage.get_trial(trial_id_of(opened.storage, opened.study, number))
            logged = client.search_runs(
                [experiment_id],
                filter_string=f"tags.`{PARENT_RUN_TAG}` = '{run_id}' and tags.`{TRIAL_TAG}` = '{number}'",
                max_results=1,
            )
            if trial.state in RUN_STATUS and not logged:
                self.log_trial(trial, opened.spec.objective.privacy_metric, scores)

        self._guarded(log)

    def log_trial(self, trial: optuna.trial.FrozenTrial, privacy_metric: str, scores: bytes | None = None) -> None:
        assert self.client is not None and self.parent is not None
        experiment_id, parent_id = self.parent
        tags = {
            PARENT_RUN_TAG: parent_id,
            STUDY_TAG: self.study_name,
            TRIAL_TAG: str(trial.number),
            STATE_TAG: trial.state.name,
            **{
                f"wemem.{key}": self.masked(str(trial.user_attrs[key]))[:MAX_TAG_CHARS]
                for key in _TRIAL_TAGS
                if key in trial.user_attrs
            },
        }
        run = self.client.create_run(
            experiment_id,
            start_time=_ms(trial.datetime_start),
            tags=tags,
            run_name=f"{self.study_name} trial {trial.number}",
        )
        run_id = run.info.run_id
        params = {key: self.masked(value) for key, value in trial_params(trial).items()}
        self.client.log_batch(run_id, metrics=_metrics(trial_metrics(trial, privacy_metric)), params=_params(params))
        self.client.log_text(run_id, self.masked(json.dumps(roc_points(trial))), "roc.json")
        self.client.log_text(run_id, self.masked(json.dumps(trial_record(trial), default=str, indent=1)), "trial.json")
        if scores is not None:
            self._log_file(run_id, SCORES_ARTIFACT, scores)
        self.client.set_terminated(run_id, RUN_STATUS[trial.state], end_time=_ms(trial.datetime_complete))

    def _log_file(self, run_id: str, name: str, content: bytes) -> None:
        """``content`` as the run's artifact ``name`` (MLflow's client uploads files only)."""
        assert self.client is not None
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, name)
            with open(path, "wb") as file:
                file.write(content)
            self.client.log_artifact(run_id, path)

    def log_confirmation(self, summary: Mapping[str, Any]) -> None:
        """A confirmation (as the study stores it: ``Confirmation.to_json()``; the confirm layer sits above this
        one) on the study's run: each confirmed setting's accuracy and leakage with their intervals over the
        fresh seeds, the paired differences from the reference, the verdict, and the whole of it as
        ``confirmation.json``."""

        def log() -> None:
            assert self.client is not None and self.parent is not None
            run_id = self.parent[1]
            tags = {
                "wemem.confirmation.seeds": ",".join(map(str, summary["seeds"])),
                **({"wemem.confirmation.verdict": summary["verdict"]} if summary.get("verdict") else {}),
            }
            self.client.log_batch(
                run_id,
                metrics=_metrics(confirmation_metrics(summary)),
                tags=_tags({k: self.masked(v)[:MAX_TAG_CHARS] for k, v in tags.items()}),
            )
            self.client.log_text(run_id, self.masked(json.dumps(summary, indent=1)), "confirmation.json")

        self._guarded(log)


_TRIAL_TAGS = ("strongest_attack", "feasible", "fail_reason", "warm_start")


# (metric name, key of a confirmed setting's stored figure: {"mean", "low", "high"})
CONFIRMED_FIGURES = (
    ("accuracy", "utility"),
    ("leakage", "privacy"),
    ("accuracy_vs_reference", "utility_difference"),
    ("leakage_vs_reference", "privacy_difference"),
)


def confirmation_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    """``confirmed.LABEL.accuracy`` and ``.leakage`` (each with ``_low``/``_high``: the t-interval over seeds),
    and ``.accuracy_vs_reference``/``.leakage_vs_reference`` (the paired difference from the reference)."""
    metrics: dict[str, float] = {}
    for candidate in summary["candidates"]:
        prefix = metric_name(f"confirmed.{candidate['label']}")
        for name, key in CONFIRMED_FIGURES:
            if key in candidate:
                ci = candidate[key]
                metrics.update(interval_metrics(f"{prefix}.{name}", ci["mean"], (ci["low"], ci["high"])))
    return metrics


def _metrics(values: Mapping[str, float]) -> list[Any]:
    from mlflow.entities import Metric

    now = _ms(datetime.datetime.now()) or 0
    return [Metric(key, value, now, 0) for key, value in values.items()]


def _params(values: Mapping[str, str]) -> list[Any]:
    from mlflow.entities import Param

    return [Param(key, value) for key, value in values.items()]


def _tags(values: Mapping[str, str]) -> list[Any]:
    from mlflow.entities import RunTag

    return [RunTag(key, value) for key, value in values.items()]


def log_confirmation(tracking: Tracking | None, opened: OpenStudy, summary: Mapping[str, Any], echo: Echo) -> None:
    """Log a confirmation to the study's MLflow run (``tracking``: see :func:`tracking_of`; with
    ``MLFLOW_TRACKING_URI`` alone only where that store tracks the study already)."""
    tracker = StudyTracker.open(tracking, opened, echo)
    if tracker is not None:
        tracker.log_confirmation(summary)
