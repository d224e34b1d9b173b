"""A tiny study on a simulated two-node Ray cluster with fake GPUs; prints what the test asserts as JSON.

Run by tests/test_cluster.py in its own process (Ray allows one driver connection per process, and the test
session already holds one). Usage: python tests/cluster_study.py WORKDIR
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import ray
from ray.cluster_utils import Cluster


def tiny_study(name: str) -> dict:
    return {
        "study": {"name": name, "n_trials": 1, "seed": 7},
        "data": {"dataset": "digits", "shadows": 2},
        "training": {"pretrain_epochs": 6, "finetune_epochs": 3, "patience": 2},
        "pruning": {"sparsity": 0.6, "steps": 2},
        "memscore": {"models": 2},
        "search": {"defenses": ["rmr"], "enqueue_reference": False},
        "attacks": {"names": ["conf", "hconf"]},
        # K + 1 = 3 model jobs of one GPU each: a trial cannot fit on one node (2 GPUs), so it spans both
        "resources": {"cpus_per_trial": 1.0, "gpus_per_trial": 3.0},
    }


def main(workdir: Path) -> None:
    import search.execution._launcher as study_module
    from search.execution._launcher import launch
    from search.study import Options
    from search.studyfile import parse_study
    from wemem.assets import cache_path

    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 2, "num_gpus": 2, "object_store_memory": 128 * 1024**2}
    )
    cluster.add_node(num_cpus=2, num_gpus=2, object_store_memory=128 * 1024**2)
    cluster.wait_for_nodes()
    os.environ["RAY_ADDRESS"] = cluster.address  # attach like after `ray start`: no --ray-address given

    deleted: list[str] = []
    run_trials = study_module.run_trials

    def run_trials_without_cache(opened, *args, **kwargs):
        """Delete the launcher's asset cache between the shared work and the trials."""
        folder = cache_path(opened.spec.experiment, opened.spec.cache_dir)
        shutil.rmtree(folder)
        deleted.append(str(folder))
        return run_trials(opened, *args, **kwargs)

    study_module.run_trials = run_trials_without_cache
    definition = parse_study(tiny_study("cluster"))
    options = Options(storage=f"sqlite:///{workdir / 'wemem.db'}", cache_dir=str(workdir / "cache"))
    study = launch(definition, options, echo=lambda message: None).study
    trials = study.get_trials(deepcopy=False)
    print(
        json.dumps(
            {
                "ray_nodes": len([n for n in ray.nodes() if n["Alive"]]),
                "cluster_address": cluster.address,
                "deleted": deleted,
                "cache_recreated": any(Path(folder).exists() for folder in deleted),
                "states": [t.state.name for t in trials],
                "shared_work_jobs": study.user_attrs.get("shared_work_jobs", []),
                "trial_jobs": [t.user_attrs.get("jobs", []) for t in trials],
                "fingerprint": study.user_attrs.get("assets_fingerprint"),
            }
        )
    )
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
