"""How one trial's time and memory grow: per stage, against the pool size N, the feature count, the shadows K and
the model, with the growth exponent of each stage fitted on the N series.

Every point is one trial (shared work, then the victim and K shadows pruned with SWMR, then every attack that
runs with K shadows) on a synthetic Location-like table (:mod:`synthetic`: N rows of Bernoulli features, 30
classes), run in a fresh process of its own with every job in that process, one after the other, on one torch
thread: a stage's CPU seconds (``time.process_time``) are then its own work, which a shared, loaded machine only
slows down (wall seconds are reported too), and the process's peak resident memory is that trial's. Epochs are
tiny (the exponent in N is the point; the config is in the JSON). The growth exponent b of each stage is the
least-squares slope of log CPU seconds on log N, printed with its standard error; a stage whose work is linear in
N has b near 1. Peak memory is compared with the data the trial's models hold (the pool's tensors, the K + 1
models' weights, their outputs over the pool). One small run on a local Ray measures what a study adds: the
workers' and the launcher's peak memory and Ray's object store.

Prints one JSON object and writes it, with the curves, under ``--out`` (default benchmarks/results/):
``scale.json``, ``scale_n.png``, ``scale_features.png``, ``scale_shadows.png``, ``scale_models.png``. Examples:
    .venv/bin/python benchmarks/bench_scale.py                 # the full benchmark (about 15 minutes on 2 cores)
    .venv/bin/python benchmarks/bench_scale.py --small --out /tmp/scale   # N = 300..1200, seconds
    .venv/bin/python benchmarks/bench_scale.py --n 80000 --series n --no-ray --out /tmp/scale   # one point
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic import write_location_like

SWMR = {"order": "h2l", "width_fraction": 0.22, "stride_fraction": 0.044, "lambda_mem": 0.1, "risky_fraction": 0.2}
TRAIN = {"pretrain_epochs": 1, "finetune_epochs": 1, "patience": 0, "batch_size": 128}
PRUNING = {"sparsity": 0.6, "steps": 2}
MEMSCORE_MODELS = 2
ATTACK_EPOCHS = 2  # every attack network trains exactly this many epochs, so its work does not vary with N
IMAGE = (1, 28, 28)
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Point:
    """One trial of a series: N pool rows of ``features`` features, K shadows, one model."""

    n: int
    features: int = 446
    shadows: int = 2
    model: str = "columnfc"
    classes: int = 30

    def table_name(self) -> str:
        return f"n{self.n}_d{self.features}_c{self.classes}"


@dataclass(frozen=True)
class Sizes:
    """The series' points: ``n`` for the N series (446 features, K = 2, columnfc), the others at ``base_n``."""

    n: tuple[int, ...]
    base_n: int
    features: tuple[int, ...]
    shadows: tuple[int, ...]
    widths: tuple[int, ...]
    classes: int = 30


FULL = Sizes((2_000, 5_000, 20_000, 80_000), 2_000, (100, 500, 2_000), (1, 3, 5), (64, 256, 1024))
# few classes, so that every class keeps enough members and non-members in 300 rows
SMALL = Sizes((300, 600, 1_200), 300, (20,), (1,), (32,), classes=4)


SERIES = {"n": "pool rows N", "features": "features", "shadows": "shadows K", "models": "model"}


def series_points(sizes: Sizes) -> dict[str, list[Point]]:
    base = Point(sizes.base_n, classes=sizes.classes)
    return {
        "n": [replace(base, n=n) for n in sizes.n],
        "features": [replace(base, features=d) for d in sizes.features],
        "shadows": [replace(base, shadows=k) for k in sizes.shadows],
        "models": [replace(base, model=f"scale_mlp_{w}") for w in sizes.widths]
        + [replace(base, features=IMAGE[1] * IMAGE[2], model="scale_cnn")],
    }


# ------------------------------------------------------------------------------- models of the model series


def register_models() -> None:
    """columnfc's three layers with other hidden widths (w, w / 2) and a small CNN for [1, 28, 28] images, as
    registered models (the trial runs in this process, so the registry is where its config finds them)."""
    from torch import nn

    from wemem.models import MODELS
    from wemem.models.mlp import ColumnFC

    def mlp(width: int) -> Callable[[tuple[int, ...], int], nn.Module]:
        def build(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
            model = ColumnFC(int(np.prod(input_shape)), num_classes)  # its forward and unprunable output layer
            model.fc1 = nn.Linear(int(np.prod(input_shape)), width)
            model.fc2 = nn.Linear(width, width // 2)
            model.fc3 = nn.Linear(width // 2, num_classes)
            return model

        return build

    def cnn(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(input_shape[0], 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * (input_shape[1] // 4) * (input_shape[2] // 4), num_classes),
        )

    for width in sorted(set(FULL.widths) | set(SMALL.widths)):
        MODELS.register(f"scale_mlp_{width}")(mlp(width))
    MODELS.register("scale_cnn")(cnn)


def fix_attack_epochs(epochs: int) -> None:
    """Every attack network trains ``epochs`` epochs (patience beyond them), not until its own early stop: the
    stop's epoch count depends on the data, which would blur the exponent of the work per epoch."""
    from wemem.attacks import ATTACKS

    for name in ATTACKS.names():
        attack = ATTACKS.get(name)
        if attack.trains_network:
            config = attack.fit_config
            attack.fit_config = replace(config, max_epochs=epochs, patience=epochs * config.checks_per_epoch)


# ---------------------------------------------------------------------------------------- one measurement


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def current_rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class StageClock:
    """CPU and wall seconds per named stage of this process, and the peak RSS when each stage ended."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = {}
        self.wall: dict[str, float] = {}
        self.peak_after: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        cpu, wall = time.process_time(), time.perf_counter()
        yield
        self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - cpu
        self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - wall
        self.peak_after[name] = peak_rss_mb()

    def stage_map(self, name_of: Callable[[Callable[..., Any], tuple[Any, ...]], str]) -> Callable[..., list[Any]]:
        """A serial MapFn that times each job under the stage ``name_of(fn, job)`` names."""

        def run(fn: Callable[..., Any], jobs: Sequence[tuple[Any, ...]]) -> list[Any]:
            outputs = []
            for job in jobs:
                with self.stage(name_of(fn, job)):
                    outputs.append(fn(*job))
            return outputs

        return run


def shared_stage(fn: Callable[..., Any], job: tuple[Any, ...]) -> str:
    return {"pretrain_job": "pretrain", "memscore_job": "memscores"}.get(fn.__name__, fn.__name__)


def pruning_stage(fn: Callable[..., Any], job: tuple[Any, ...]) -> str:
    return "prune_victim" if job[-1].model_index == 0 else "prune_shadows"


def attack_stage(fn: Callable[..., Any], job: tuple[Any, ...]) -> str:
    return "attack_" + "+".join(job[-1].names)


def data_bytes(assets: Any, outputs: int) -> dict[str, int]:
    """What the trial's models hold: the pool's tensors, the K + 1 models' weights, and their ``outputs`` arrays
    of [N, C] (log-probabilities, and sensitivities where an attack reads them) as float32."""
    pools = assets.pools
    weights = sum(t.numel() * t.element_size() for state in assets.pretrained.values() for t in state.values())
    rows, classes = len(pools.y), pools.num_classes
    return {
        "pool": pools.x.numel() * pools.x.element_size() + pools.y.numel() * pools.y.element_size(),
        "weights": weights,
        "outputs": outputs * len(assets.pretrained) * rows * classes * 4,
    }


def measure(point: Point, data_file: Path, cache_dir: Path) -> dict[str, Any]:
    """One trial at ``point``, every job in this process: CPU and wall seconds per stage, peak RSS."""
    import torch

    torch.set_num_threads(1)
    from wemem.assets import prepare_assets
    from wemem.attacks import ATTACKS
    from wemem.config import ExperimentConfig, PruningConfig
    from wemem.data import make_study_split
    from wemem.defenses import Setting
    from wemem.pipeline import PruningJob, prune_job, run_attack_stage
    from wemem.training import TrainConfig

    register_models()
    fix_attack_epochs(ATTACK_EPOCHS)
    attacks = [a for a in ATTACKS.names() if ATTACKS.get(a).min_shadows <= point.shadows]
    config = ExperimentConfig(
        dataset=f"npz:{data_file}",
        model=point.model,
        shadows=point.shadows,
        train=TrainConfig(**TRAIN),
        memscore_models=MEMSCORE_MODELS,
    )
    baseline_rss = peak_rss_mb()  # the imports: the same for every trial
    clock = StageClock()
    with clock.stage("load"):
        pools = config.load_pools()
    with clock.stage("split"):
        make_study_split(pools, config.seed, config.shadows)
    del pools
    with clock.stage("shared_total"):
        assets = prepare_assets(config, cache_dir, clock.stage_map(shared_stage))
    setting = Setting("swmr", SWMR)
    sensitivity = any(ATTACKS.get(a).needs_sensitivity for a in attacks)
    jobs = [
        (assets, PruningJob(i, setting, PruningConfig(**PRUNING), sensitivity=sensitivity))
        for i in range(point.shadows + 1)
    ]
    victim, *shadows = clock.stage_map(pruning_stage)(prune_job, jobs)
    for name in attacks:
        run_attack_stage(assets, victim, shadows, [name], clock.stage_map(attack_stage))
    inner = sum(clock.cpu[s] for s in ("load", "split", "pretrain", "memscores"))
    cpu, wall = dict(clock.cpu), dict(clock.wall)
    # prepare_assets' own remainder: loading and splitting again, the cache files and the content fingerprint
    cpu["shared_rest"] = cpu.pop("shared_total") - inner
    wall["shared_rest"] = wall.pop("shared_total") - sum(
        clock.wall[s] for s in ("load", "split", "pretrain", "memscores")
    )
    held = data_bytes(assets, 2 if sensitivity else 1)
    peak = peak_rss_mb()
    return {
        **asdict(point),
        "attacks": attacks,
        "cpu_s": cpu,
        "wall_s": wall,
        "peak_rss_mb": peak,
        "import_rss_mb": baseline_rss,
        "peak_rss_after_mb": clock.peak_after,
        "data_held_mb": {k: v / 2**20 for k, v in held.items()},
        "peak_over_data": peak / (sum(held.values()) / 2**20),
        "peak_above_imports_over_data": (peak - baseline_rss) / (sum(held.values()) / 2**20),
    }


# -------------------------------------------------------------------------------------------- the series


def write_data(point: Point, folder: Path) -> Path:
    """The point's synthetic table (written once per size); image-shaped [N, 1, 28, 28] for the CNN."""
    shape = (point.n, point.features, point.classes)
    table = write_location_like(folder / f"{point.table_name()}.npz", shape=shape)
    if point.model != "scale_cnn":
        return table
    image = folder / f"{point.table_name()}_image.npz"
    if not image.exists():
        with np.load(table) as arrays:
            np.savez(image, x=arrays["x"].reshape(-1, *IMAGE), y=arrays["y"])
    return image


def run_point(point: Point, folder: Path) -> dict[str, Any]:
    """``measure`` in a fresh process, so that its peak RSS is this trial's alone."""
    data_file = write_data(point, folder)
    with tempfile.TemporaryDirectory(dir=folder) as cache:  # a cold cache: every shared piece is computed
        command = [sys.executable, __file__, "--measure", json.dumps(asdict(point)), "--data", str(data_file)]
        done = subprocess.run(command + ["--cache-dir", cache], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the trial at {point} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout)


def growth_exponent(sizes: Sequence[float], seconds: Sequence[float]) -> dict[str, float]:
    """Least-squares slope b of log seconds = a + b log N, with its standard error (NaN with two points), and
    the slope between the two largest sizes alone: a stage's fixed start-up cost (the first training step of a
    process) flattens the fit at small N, not the last step."""
    x, y = np.log(np.asarray(sizes, dtype=float)), np.log(np.maximum(np.asarray(seconds, dtype=float), 1e-6))
    (slope, _), residuals, *_ = np.polyfit(x, y, 1, full=True)
    dof = len(x) - 2
    variance = float(residuals[0]) / dof if dof > 0 and len(residuals) else float("nan")
    return {
        "exponent": float(slope),
        "stderr": float(np.sqrt(variance / np.sum((x - x.mean()) ** 2))),
        "exponent_last_step": float((y[-1] - y[-2]) / (x[-1] - x[-2])),
    }


def stage_exponents(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Every stage's growth exponent in N, fitted on CPU seconds, and the whole trial's; none from one size."""
    sizes = [r["n"] for r in runs]
    if len(sizes) < 2:
        return {}
    stages = {s: [r["cpu_s"][s] for r in runs] for s in runs[0]["cpu_s"]}
    stages["trial"] = [sum(r["cpu_s"].values()) for r in runs]
    stages["peak_rss_above_imports"] = [r["peak_rss_mb"] - r["import_rss_mb"] for r in runs]
    return {stage: growth_exponent(sizes, seconds) for stage, seconds in stages.items()}


# ---------------------------------------------------------------------------------------------- Ray run


def process_tree_peaks(root: int) -> dict[int, tuple[str, float]]:
    """Peak resident MiB (``VmHWM``) and name of every live process under ``root`` (Ray's raylet, workers ...)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):  # a process that ended while we looked
                continue
    tree, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - tree
        tree |= frontier
    peaks = {}
    for pid in tree:
        try:
            status = dict(line.split(":", 1) for line in (Path("/proc") / str(pid) / "status").read_text().splitlines())
            peaks[pid] = (status["Name"].strip(), int(status["VmHWM"].split()[0]) / 1024)
        except (OSError, KeyError, ValueError):
            continue
    return peaks


def shared_memory_mb() -> float:
    """MiB in use on /dev/shm, where a local Ray's object store keeps its objects (Ray's own summary needs grpc,
    which Ray's minimal install lacks); other programs' shared memory counts too, so the growth is what we read."""
    usage = shutil.disk_usage("/dev/shm")
    return usage.used / 2**20


def ray_run(point: Point, folder: Path) -> dict[str, Any]:
    """One trial on a local 2-CPU Ray, as a study runs it: every process's peak RSS and the object store's peak
    growth (both sampled while the trial ran, as workers may exit)."""
    import ray

    from search.execution._cluster import init_ray
    from search.execution._jobs import RayMap
    from wemem.assets import prepare_assets
    from wemem.attacks import ATTACKS
    from wemem.config import ExperimentConfig, PruningConfig
    from wemem.defenses import Setting
    from wemem.pipeline import run_experiment
    from wemem.training import TrainConfig

    data_file = write_data(point, folder)
    shutil.rmtree(folder / "ray-cache", ignore_errors=True)  # a cold cache, as for the serial points
    config = ExperimentConfig(
        dataset=f"npz:{data_file}", shadows=point.shadows, train=TrainConfig(**TRAIN), memscore_models=MEMSCORE_MODELS
    )
    attacks = [a for a in ATTACKS.names() if ATTACKS.get(a).min_shadows <= point.shadows]
    init_ray(num_cpus=2)
    peaks: dict[int, tuple[str, float]] = {}
    store_before, store_peak = shared_memory_mb(), 0.0
    running = True

    def sample() -> None:
        nonlocal store_peak
        while running:
            peaks.update(process_tree_peaks(os.getpid()))
            store_peak = max(store_peak, shared_memory_mb() - store_before)
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    share = RayMap(num_cpus=2 / (point.shadows + 1))
    start = time.perf_counter()
    assets = prepare_assets(config, folder / "ray-cache", share)
    run_experiment(assets, Setting("swmr", SWMR), PruningConfig(**PRUNING), attacks, share)
    seconds = time.perf_counter() - start
    running = False
    sampler.join()
    ray.shutdown()
    # Ray's task workers (named ray::IDLE or ray::<task>), not its dashboard and runtime-environment agents
    agents = ("ray::DashboardA", "ray::RuntimeEnv")
    workers = [mb for name, mb in peaks.values() if name.startswith("ray::") and not name.startswith(agents)]
    return {
        **asdict(point),
        "wall_s": seconds,
        "launcher_peak_rss_mb": peak_rss_mb(),
        "workers": len(workers),
        "worker_peak_rss_mb_max": max(workers, default=0.0),
        "worker_peak_rss_mb_sum": sum(workers),
        "ray_processes_peak_rss_mb": {f"{name}[{pid}]": mb for pid, (name, mb) in sorted(peaks.items())},
        "object_store_peak_mb": store_peak,
        "pool_mb": data_bytes(assets, 1)["pool"] / 2**20,
    }


# ------------------------------------------------------------------------------------------------ output


def plot(series: dict[str, list[dict[str, Any]]], exponents: dict[str, dict[str, float]], out: Path) -> list[str]:
    """One figure per series: each stage's CPU seconds (log-log for N, with the fitted exponent in the legend),
    and the peak RSS on a second axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes_of = SERIES
    written = []
    for key, runs in series.items():
        fig, (ax, mem) = plt.subplots(1, 2, figsize=(13, 4.6), gridspec_kw={"width_ratios": [1.4, 1]})
        labels = [r["model"].removeprefix("scale_") if key == "models" else r[key_field(key)] for r in runs]
        xs = np.arange(len(runs)) if key == "models" else np.asarray(labels, dtype=float)
        for index, stage in enumerate(runs[0]["cpu_s"]):
            legend = stage
            if key == "n" and exponents:
                legend += f" (b={exponents[stage]['exponent']:.2f}±{exponents[stage]['stderr']:.2f})"
            style = ("-", "--", ":")[index // 10 % 3]  # the colour cycle has 10 colours
            ax.plot(xs, [max(r["cpu_s"][stage], 1e-3) for r in runs], marker="o", ls=style, label=legend)
        mem.plot(xs, [r["peak_rss_mb"] for r in runs], marker="o", label="peak RSS")
        mem.plot(xs, [r["import_rss_mb"] for r in runs], ls="--", label="RSS after the imports")
        mem.plot(xs, [sum(r["data_held_mb"].values()) for r in runs], marker="s", label="data held by the models")
        for axis in (ax, mem):
            axis.set_xlabel(axes_of[key])
            if key == "models":
                axis.set_xticks(xs, labels)
            elif key in ("n", "features"):
                axis.set_xscale("log")
                axis.set_xticks(xs, [f"{x:,.0f}" for x in xs])
                axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_yscale("log")
        ax.set(ylabel="CPU seconds (one process, one thread)", title=f"one trial's stages against {axes_of[key]}")
        mem.set(ylabel="MiB", title="peak resident memory")
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        mem.legend(fontsize=8)
        fig.tight_layout()
        path = out / f"scale_{key}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(str(path))
    return written


def pool_sizes(text: str) -> tuple[int, ...]:
    """``--n``: comma-separated pool sizes, each at least 300 rows (every class keeps members and non-members)."""
    try:
        sizes = tuple(sorted({int(size) for size in text.split(",")}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"give whole numbers separated by commas, got {text!r}") from None
    if sizes[0] < 300:
        raise argparse.ArgumentTypeError(f"every pool size must be at least 300 rows, got {sizes[0]}")
    return sizes


def key_field(series: str) -> str:
    return {"n": "n", "features": "features", "shadows": "shadows"}[series]


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)  # stdout stays pure JSON


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="N = 300..1200 and small series: a smoke run")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where scale.json and the figures go")
    parser.add_argument("--work", type=Path, default=None, help="data and caches (default: a temporary folder)")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray run (memory of workers, object store)")
    parser.add_argument(
        "--series", default="n,features,shadows,models", help="which series to run, comma-separated (n is always run)"
    )
    parser.add_argument(
        "--n",
        type=pool_sizes,
        help="the N series' pool sizes, comma-separated (default: 2000,5000,20000,80000; --small: 300,600,1200)",
    )
    parser.add_argument("--replot", type=Path, help="refit and redraw a saved scale.json (written again in --out)")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # one point, in the child process
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(Point(**json.loads(args.measure)), args.data, args.cache_dir)))
        return
    if args.replot:  # the analysis again on saved measurements: exponents refitted, figures redrawn
        saved = json.loads(args.replot.read_text())
        saved["exponents_in_n"] = stage_exponents(saved["series"]["n"])
        args.out.mkdir(parents=True, exist_ok=True)
        saved["plots"] = plot(saved["series"], saved["exponents_in_n"], args.out)
        write_report(saved, args.out)
        return
    sizes = SMALL if args.small else FULL
    if args.n:
        sizes = replace(sizes, n=args.n)
    chosen = {"n", *args.series.split(",")}
    if chosen - set(SERIES):
        parser.error(f"--series takes some of {', '.join(SERIES)} (got {args.series!r})")
    points = {name: series for name, series in series_points(sizes).items() if name in chosen}
    with tempfile.TemporaryDirectory(prefix="wemem-bench-scale-") as temporary:
        folder = args.work or Path(temporary)
        folder.mkdir(parents=True, exist_ok=True)
        # each point once (the base point belongs to every series), the small ones first; every measurement is
        # appended to scale_points.jsonl as it ends, so a run cut short keeps what it measured
        measured: dict[Point, dict[str, Any]] = {}
        args.out.mkdir(parents=True, exist_ok=True)
        log = args.out / "scale_points.jsonl"
        log.write_text("")
        for point in sorted({p for series_of in points.values() for p in series_of}, key=lambda p: (p.n, str(p))):
            progress(f"measuring {point}")
            measured[point] = run_point(point, folder)
            with log.open("a") as handle:
                handle.write(json.dumps(measured[point]) + "\n")
        series = {name: [measured[p] for p in series_of] for name, series_of in points.items()}
        ray_point = Point(sizes.base_n, classes=sizes.classes)
        ray = None if args.no_ray else ray_run(ray_point, folder)
    exponents = stage_exponents(series["n"])
    largest = series["n"][-1]
    report = {
        "benchmark": "scale",
        "small": args.small,
        "config": {
            "dataset": f"synthetic Location-like table (benchmarks/synthetic.py), {sizes.classes} classes",
            "train": TRAIN,
            "pruning": PRUNING,
            "defense": ["swmr", SWMR],
            "memscore_models": MEMSCORE_MODELS,
            "attack_network_epochs": ATTACK_EPOCHS,
            "torch_threads": 1,
            "measured": "each point in a fresh process, jobs serial in-process; exponents fitted on CPU seconds",
            "machine_cpus": os.cpu_count(),
            "loadavg_at_end": os.getloadavg(),
        },
        "exponents_in_n": exponents,
        "memory_at_largest_n": {
            "n": largest["n"],
            "peak_rss_mb": largest["peak_rss_mb"],
            "import_rss_mb": largest["import_rss_mb"],
            "data_held_mb": largest["data_held_mb"],
            "peak_over_data": largest["peak_over_data"],
            "peak_above_imports_over_data": largest["peak_above_imports_over_data"],
        },
        "series": series,
        "ray": ray,
    }
    report["plots"] = plot(series, exponents, args.out)
    write_report(report, args.out)


def write_report(report: dict[str, Any], out: Path) -> None:
    text = json.dumps(rounded(report), indent=1)
    (out / "scale.json").write_text(text + "\n")
    print(text)


def rounded(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v) for v in value]
    return round(value, 4) if isinstance(value, float) else value


if __name__ == "__main__":
    main()
