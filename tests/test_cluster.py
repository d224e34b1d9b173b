"""Ray start-up, resource shares and a study on a simulated two-node cluster with fake GPUs.

The cluster test runs tests/cluster_study.py in a subprocess: a process holds one Ray connection, and this test
session's own Ray (conftest) must stay untouched for the other tests, whatever the order.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

import search.execution._cluster as runner
import search.execution._jobs as raymap
from search.execution._cluster import init_ray
from search.execution._jobs import RayMap, threads_for
from wemem.errors import WememError

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------ start-up


class FakeRay:
    """Records ray.init's arguments instead of starting anything."""

    def __init__(self):
        self.calls: list[dict] = []

    def is_initialized(self) -> bool:
        return False

    def init(self, **kwargs):
        self.calls.append(kwargs)


@pytest.fixture
def fake_ray(monkeypatch: pytest.MonkeyPatch) -> FakeRay:
    fake = FakeRay()
    monkeypatch.setattr(runner.ray, "is_initialized", fake.is_initialized)
    monkeypatch.setattr(runner.ray, "init", fake.init)
    monkeypatch.setattr(runner, "_unreachable", lambda address: None)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return fake


def test_without_an_address_a_private_local_ray_starts_and_detects_its_resources(fake_ray: FakeRay) -> None:
    init_ray()
    (call,) = fake_ray.calls
    assert call["address"] == "local"  # never a running `ray start` cluster by accident
    assert call["num_cpus"] is None  # Ray's own (cgroup-aware) detection


@pytest.mark.parametrize("address", ["auto", "10.0.0.5:6379", "ray://head:10001"])
def test_ray_address_env_attaches_without_declaring_resources(fake_ray: FakeRay, monkeypatch, address: str) -> None:
    monkeypatch.setenv("RAY_ADDRESS", address)
    init_ray(num_cpus=4)
    (call,) = fake_ray.calls
    assert call["address"] == address
    assert not {"num_cpus", "num_gpus", "object_store_memory", "_system_config"} & set(call)


def test_the_option_wins_over_the_environment(fake_ray: FakeRay, monkeypatch) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    init_ray("10.0.0.9:6379")
    assert fake_ray.calls[0]["address"] == "10.0.0.9:6379"


@pytest.mark.parametrize("address", ["127.0.0.1:1", "ray://127.0.0.1:1"])
def test_an_unreachable_cluster_is_a_clear_error(monkeypatch, address: str) -> None:
    monkeypatch.setattr(runner.ray, "is_initialized", lambda: False)
    with pytest.raises(WememError, match=r"cannot reach the Ray cluster at .*127\.0\.0\.1:1.*ray start --head"):
        init_ray(address)


def test_threads_follow_the_cpu_share_rounded() -> None:
    assert [threads_for(c) for c in (0.001, 0.5, 1.0, 1.99, 2.0, 12 / 6)] == [1, 1, 1, 2, 2, 2]
    assert threads_for(11.9 / 6) == 2  # 12 CPUs over K + 1 = 6 jobs minus the head's share: not truncated to 1


def test_shipped_assets_come_back_equal_and_memoized(ray_session, tiny_assets) -> None:
    shipped = raymap.ship(tiny_assets)
    assert raymap.ship(tiny_assets) is shipped  # put once per process
    raymap._RECEIVED.clear()
    received = raymap.receive(shipped)
    assert received is raymap.receive(shipped)
    assert received.fingerprint == tiny_assets.fingerprint
    assert bool((received.pools.x == tiny_assets.pools.x).all())
    assert all(bool((received.pretrained["victim"][k] == v).all()) for k, v in tiny_assets.pretrained["victim"].items())
    # same weights and data, other fine-tuning config: a different object for the workers (never the memo's)
    longer = dataclasses.replace(
        tiny_assets.config, train=dataclasses.replace(tiny_assets.config.train, finetune_epochs=60)
    )
    other = raymap.ship(dataclasses.replace(tiny_assets, config=longer))
    assert other.fingerprint != shipped.fingerprint
    assert raymap.receive(other).config.train.finetune_epochs == 60


def test_gpu_shares_never_reuse_a_worker() -> None:
    assert raymap._job_task(0.5, 0.25)._default_options["max_calls"] == 1
    assert raymap._job_task(0.5, 0.0)._default_options["max_calls"] == 0
    assert RayMap(0.5, 0.25).placements == []


# ------------------------------------------------------------------------------------------ the cluster


def test_study_on_a_two_node_cluster_with_fake_gpus(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "cluster_study.py"), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])

    assert report["ray_nodes"] == 2  # attached to the cluster through RAY_ADDRESS, not a private Ray
    assert report["states"] == ["COMPLETE"]
    assert report["deleted"] and not report["cache_recreated"]  # the trial ran without the launcher's cache
    assert report["fingerprint"]

    records = report["shared_work_jobs"] + [job for jobs in report["trial_jobs"] for job in jobs]
    kinds = {kind for kind, _, _, _ in records}
    assert {"pretrain", "memscore", "prune", "attack"} <= kinds
    assert all(gpus for _, _, _, gpus in records), records  # every heavy job held a GPU id
    gpus_of_pid = defaultdict(set)
    for _, node, pid, gpus in records:
        gpus_of_pid[(node, pid)].add(tuple(gpus))
    assert all(len(ids) == 1 for ids in gpus_of_pid.values()), gpus_of_pid  # no worker served two GPU ids
    assert len({node for _, node, _, _ in records}) == 2
    (trial_jobs,) = report["trial_jobs"]
    assert {kind for kind, _, _, _ in trial_jobs} == {"prune", "attack"}
    assert len({node for _, node, _, _ in trial_jobs}) == 2  # a trial's 3 GPUs span both nodes


# ------------------------------------------------------------------------------------ assets fingerprint


def test_a_launcher_with_other_assets_is_refused(ray_session, tiny_config, tiny_assets, cache_dir) -> None:
    import optuna

    from search.execution._trainable import shared_work
    from search.study import OpenStudy, Options, Place
    from search.studyfile import parse_study

    definition = parse_study(
        {
            "study": {"name": "fingerprinted", "seed": tiny_config.seed},
            "data": {"dataset": "digits", "shadows": tiny_config.shadows},
            "training": {"pretrain_epochs": 6, "finetune_epochs": 3, "patience": 2},
            "pruning": {"sparsity": 0.6, "steps": 2},
            "memscore": {"models": 2},
            "attacks": {"names": ["conf"]},
        }
    )
    spec = definition.trial_spec(str(cache_dir))
    assert spec.experiment == tiny_config  # reuses the session's cached assets
    study = optuna.create_study(study_name="fingerprinted")
    opened = OpenStudy(study, definition, None, Place(Options(cache_dir=str(cache_dir)), str(cache_dir), None))
    shipped, _base = shared_work(opened, echo=lambda message: None)
    stored = study.user_attrs["assets_fingerprint"]
    shared_work(opened, echo=lambda message: None)  # same assets: accepted
    study.set_user_attr("assets_fingerprint", "0" * 64)  # as if the study had been run on another victim
    with pytest.raises(WememError, match=r"other assets.*--cache-dir"):
        shared_work(opened, echo=lambda message: None)
    assert stored != "0" * 64 and shipped.fingerprint


# ------------------------------------------------------------------------------------ CUDA speed-ups


def test_bf16_and_channels_last_are_study_settings_and_inert_on_cpu() -> None:
    import torch

    from search.studyfile import parse_study
    from wemem.models import build_model
    from wemem.training import place_model, training_autocast

    default = parse_study({"study": {"name": "s"}}).experiment()
    switched = parse_study({"study": {"name": "s"}, "resources": {"bf16": False, "channels_last": False}}).experiment()
    on, off = default.train, switched.train
    assert (on.bf16, on.channels_last, off.bf16, off.channels_last) == (True, True, False, False)
    assert default.key() != switched.key()  # separate caches: on a GPU the pretrained weights differ
    cpu = torch.device("cpu")
    model = place_model(build_model("resnet18", (3, 8, 8), 10), cpu, on)
    assert model.stem[0][0].weight.is_contiguous()  # NCHW on the CPU
    with training_autocast(cpu, on):
        assert not torch.is_autocast_enabled("cuda")
    if torch.cuda.is_available():  # pragma: no cover - GPU machines only
        gpu = place_model(build_model("resnet18", (3, 8, 8), 10), torch.device("cuda"), on)
        assert gpu.stem[0][0].weight.is_contiguous(memory_format=torch.channels_last)
        with training_autocast(torch.device("cuda"), on):
            assert torch.get_autocast_dtype("cuda") == torch.bfloat16 and torch.is_autocast_enabled("cuda")
