"""What importing the tool costs. Every Ray worker imports wemem, every trial's actor search.execution._trainable,
and every `wemem` command search.cli: scipy.stats, sklearn.metrics and matplotlib (about a second each here) are
imported only by the functions that use them (docs/contributing.md)."""

from __future__ import annotations

import json
import subprocess
import sys

DEFERRED = ["scipy.stats", "sklearn.metrics", "matplotlib"]


def test_the_worker_the_trial_actor_and_the_cli_import_no_deferred_module():
    probe = (
        "import json, sys\n"
        "import wemem.pipeline, objectives, search.execution._trainable, search.cli\n"
        f"print(json.dumps([name for name in {DEFERRED!r} if name in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == []


def test_the_deferred_modules_are_there_when_used():
    """The functions that defer them still work from a fresh import (one of each kind)."""
    probe = (
        "import numpy as np\n"
        "from wemem.metrics import auc\n"
        "from wemem.uncertainty import clopper_pearson, min_false_positives, MIN_FALSE_POSITIVES\n"
        "from search.confirm._statistics import t_interval\n"
        "from search.results import write_report\n"
        "assert auc(np.array([0.1, 0.9]), np.array([False, True])) == 1.0\n"
        "assert MIN_FALSE_POSITIVES == min_false_positives() == 8\n"
        "assert clopper_pearson(0, 10)[0] == 0.0 and t_interval([1.0, 2.0, 3.0]).low < 2.0\n"
        "assert callable(write_report)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
