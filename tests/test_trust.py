"""The trust model for code named by files (README "Received files and secrets", docs/own_model.md), each test
written as the attack it closes: the folder or file it aims at is still there, no marker file is written, and the
command exits 2 with a message naming the rule.

A plug-in reference reaches only a class or function defined in a module file (or package folder) of the folder
of the file that names it; modules are loaded by path under a private name, never from ``sys.path``; no process
(launcher, Ray worker) imports a ``.py`` file of the working directory; ``[own_code]`` hashes every file of a
plug-in, and an export's code runs only with ``--allow-code``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tomli_w
from helpers import rmr_trial

from search.cli import main
from search.storage import open_storage
from search.storage._records import store_launch_place
from search.study import create_or_load_study
from search.studyfile import parse_study
from wemem.errors import WememError

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
RULE = "a plug-in reference names"  # every refusal of the trust model names its rule in these words
TINY = {
    "study": {"name": "attack", "n_trials": 1, "seed": 7, "sampler": "random"},
    "data": {"shadows": 2},
    "training": {"pretrain_epochs": 2, "finetune_epochs": 1, "patience": 1},
    "pruning": {"sparsity": 0.5, "steps": 1},
    "memscore": {"models": 2},
    "search": {"defenses": ["rmr"], "enqueue_reference": False},
    "attacks": {"names": ["conf", "entr"]},
}
TINY_RUN = [
    "--seed",
    "7",
    "--shadows",
    "2",
    "--pretrain-epochs",
    "2",
    "--finetune-epochs",
    "1",
    "--patience",
    "1",
    "--memscore-models",
    "2",
    "--steps",
    "1",
    "--attacks",
    "conf,entr",
]
MARKER_MODULE = "import pathlib\npathlib.Path({path!r}).write_text('imported')\n"


# ------------------------------------------------------------------------------------------------ the targets


class Targets:
    """What the attacks aim at, in a folder that is also the working directory: a folder of data, a file of
    data, and a script that writes a marker when run."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.data = folder / "precious"
        self.data.mkdir()
        (self.data / "results.csv").write_text("keep me\n")
        self.file = folder / "precious.txt"
        self.file.write_text("keep me too\n")
        self.marker = folder / "MARKER"
        self.script = folder / "payload.sh"
        self.script.write_text(f"#!/bin/sh\ntouch {self.marker}\n")
        self.script.chmod(0o755)

    def root_for(self, target: str) -> str:
        return str({"folder": self.data, "file": self.file, "script": self.script}[target])

    def intact(self) -> bool:
        return (
            (self.data / "results.csv").is_file()
            and self.file.read_text() == "keep me too\n"
            and not self.marker.exists()
        )


@pytest.fixture
def targets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Targets:
    monkeypatch.chdir(tmp_path)
    return Targets(tmp_path)


def local_modules(folder: Path) -> None:
    """Local modules that try to pass installed code off as their own."""
    (folder / "mymod.py").symlink_to(shutil.__file__)  # "a module of the folder" that is the standard library's
    (folder / "walk.py").write_text("import shutil as helper\n")  # walk: helper.rmtree
    (folder / "reexport.py").write_text("from shutil import rmtree\nfrom os import truncate\n")


# (reference, what data_root points at, the study seed): each is harmful when called as loader(data_root, seed)
ATTACKS = {
    "re-export walk to shutil.rmtree": ("wemem.files:tempfile._shutil.rmtree", "folder", 7),
    "re-export walk to os.truncate": ("wemem.files:os.truncate", "file", 0),
    "installed package's rmtree": ("pip._internal.utils.misc:rmtree", "folder", 7),
    "installed package's subprocess.call": ("pip._internal.utils.subprocess:subprocess.call", "script", 7),
    "module symlinked to the standard library": ("mymod:rmtree", "folder", 7),
    "dotted attribute": ("walk:helper.rmtree", "folder", 7),
    "imported name re-exported by a local module": ("reexport:rmtree", "folder", 7),
    "imported builtin re-exported by a local module": ("reexport:truncate", "file", 0),
}


def refused(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    """Run the command line; it must exit 2 with the rule in its message and no traceback."""
    try:
        code = main(argv)
    except SystemExit as exit_info:
        code = int(exit_info.code)
    out, err = capsys.readouterr()
    assert code == 2, out + err
    assert "Traceback" not in err
    return (out + err).replace("\n", " ")


def attack_study(folder: Path, section: str, reference: str, target: str, seed: int, targets: Targets) -> str:
    data = {key: dict(value) for key, value in TINY.items()}
    data["study"]["seed"] = seed
    if section == "data":
        data["data"].update(dataset=reference, data_root=targets.root_for(target))
    else:
        data["model"] = {"name": reference}
    path = folder / "study.toml"
    path.write_text(tomli_w.dumps(data))
    return str(path)


@pytest.mark.parametrize("section", ["data", "model"])
@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_launch_refuses_a_reference_to_code_that_is_not_defined_in_a_module_of_the_study_folder(
    targets: Targets, attack: str, section: str, capsys: pytest.CaptureFixture
):
    reference, target, seed = ATTACKS[attack]
    local_modules(targets.folder)
    imported_before = set(sys.modules)
    study = attack_study(targets.folder, section, reference, target, seed, targets)
    message = refused(
        [
            "launch",
            study,
            "--storage",
            f"sqlite:///{targets.folder / 'w.db'}",
            "--cache-dir",
            str(targets.folder / "cache"),
        ],
        capsys,
    )
    assert RULE in message, message
    assert targets.intact()
    assert not (targets.folder / "w.db").exists()
    if reference.startswith("pip."):  # refused before anything of it was imported
        assert "pip._internal.utils.misc" not in set(sys.modules) - imported_before


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_wemem_run_refuses_the_same_references_as_dataset_and_model(
    targets: Targets, attack: str, capsys: pytest.CaptureFixture
):
    reference, target, seed = ATTACKS[attack]
    local_modules(targets.folder)
    places = ["--serial", "--out", str(targets.folder / "result"), "--cache-dir", str(targets.folder / "cache")]
    message = refused(
        ["run", "--dataset", reference, "--data-root", targets.root_for(target), "--seed", str(seed), *places], capsys
    )
    assert RULE in message, message
    message = refused(["run", "--model", reference, *places], capsys)
    assert RULE in message, message
    assert targets.intact()
    assert not (targets.folder / "result.json").exists()


# -------------------------------------------------------------------------------- received exports and storages


def pip_misc() -> tuple[str, str]:
    """The reference to pip's rmtree and the (public) SHA-256 of the file defining it."""
    import importlib.util

    origin = importlib.util.find_spec("pip").submodule_search_locations[0]
    source = Path(origin, "_internal", "utils", "misc.py").read_bytes()
    return "pip._internal.utils.misc:rmtree", hashlib.sha256(source).hexdigest()


def without_none(value: object) -> object:
    """As `wemem export` writes (TOML has no null) and reads back."""
    if isinstance(value, dict):
        return {k: without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_none(v) for v in value]
    return value


def received_export(folder: Path, dataset: str, own_code: dict) -> Path:
    """An export as an attacker writes one: its definition fingerprint recomputed, so it reads as unedited."""
    from search.results._export import DEFINITION_KEY, definition_fingerprint

    definition = parse_study({**TINY, "data": {"dataset": dataset, "shadows": 2}})
    document = {
        "study": definition.name,
        "seed": definition.study.seed,
        "model": definition.model.name,
        "dataset": definition.data.model_dump(exclude_none=True),
        "objective": definition.objective.model_dump(),
        "training": definition.training.model_dump(),
        "pruning": definition.pruning.model_dump(),
        "memscore": definition.memscore.model_dump(),
        "attacks": definition.attacks.model_dump(),
        "own_code": own_code,
        "best": {
            "trial_number": 0,
            "defense": "rmr",
            "settings": {"lambda_mem": 0.1, "risky_fraction": 0.2},
            "metrics": {"test_accuracy": 0.9, "privacy": 0.52, "strongest_attack": "conf"},
        },
    }
    document = without_none(document)
    document[DEFINITION_KEY] = definition_fingerprint(document)
    path = folder / "received.toml"
    path.write_text(tomli_w.dumps(document))
    return path


@pytest.mark.parametrize("allow_code", [False, True])
def test_apply_refuses_an_export_naming_installed_code_even_with_its_true_hash(
    targets: Targets, allow_code: bool, capsys: pytest.CaptureFixture
):
    reference, sha256 = pip_misc()
    export = received_export(targets.folder, reference, {"dataset": {"reference": reference, "sha256": sha256}})
    message = refused(
        [
            "apply",
            str(export),
            "--out",
            str(targets.folder / "applied"),
            "--data-root",
            str(targets.data),
            "--cache-dir",
            str(targets.folder / "cache"),
            *(["--allow-code"] if allow_code else []),
        ],
        capsys,
    )
    assert RULE in message and "'pip'" in message, message
    assert "edited" not in message  # the fingerprint was recomputed: only the rule stands in the way
    assert targets.intact() and not (targets.folder / "applied").exists()


def received_storage(folder: Path, dataset: str, data_root: str, own_code: dict) -> str:
    """A storage as an attacker writes one: a finished trial, a stored definition naming ``dataset`` and a
    stored data root, with ``own_code`` recorded."""
    url = f"sqlite:///{folder / 'received.db'}"
    storage = open_storage(url)
    definition = parse_study({**TINY, "data": {"dataset": dataset, "shadows": 2}})
    study, _ = create_or_load_study(definition, storage, {})
    store_launch_place(study, str(folder / "cache"), data_root, str(folder))
    study.set_user_attr("own_code", own_code)
    study.set_user_attr("reference", {"utility": 0.9, "privacy": 0.6, "strongest_attack": "conf"})
    study.add_trial(rmr_trial(0.55))
    storage.engine.dispose()
    return url


@pytest.mark.parametrize("command", ["resume", "confirm"])
def test_resume_and_confirm_refuse_a_stored_definition_naming_installed_code(
    targets: Targets, command: str, capsys: pytest.CaptureFixture
):
    reference, sha256 = pip_misc()
    url = received_storage(
        targets.folder, reference, str(targets.data), {"dataset": {"reference": reference, "sha256": sha256}}
    )
    message = refused([command, "attack", "--storage", url], capsys)
    assert RULE in message and "'pip'" in message, message
    assert targets.intact()


# ------------------------------------------------------------------------------------- loading by path, hashing


NET = """
from torch import nn

from . import layers  # relative
from {package}.layers import WIDTH  # absolute, by the package's own name
import {package}.layers as same_layers
import wave  # the standard library's, though a wave.py lies beside the package

try:
    from . import linked  # when it is a link to a file outside the folder: no module of the package
except ImportError:
    linked = None

WAVE_FILE = wave.__file__


class Net(nn.Module):
    def __init__(self, input_shape, num_classes):
        super().__init__()
        assert layers.WIDTH == WIDTH == same_layers.WIDTH
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(int(__import__("math").prod(input_shape)), WIDTH),
                                  nn.ReLU(), nn.Linear(WIDTH, num_classes))

    def forward(self, x):
        return self.body(x)
"""


def plugin_package(folder: Path, package: str = "pkg") -> None:
    """A package plug-in (``package.sub:Net``) importing itself relatively and by name, and ``wave``, beside a
    ``wave.py`` (and a numpy.py and colorsys.py) that write a marker when imported."""
    (folder / package).mkdir()
    (folder / package / "__init__.py").write_text("from .layers import WIDTH\n")
    (folder / package / "layers.py").write_text("WIDTH = 16\n")
    (folder / package / "sub.py").write_text(NET.format(package=package))
    for name in ("wave", "numpy", "colorsys"):
        (folder / f"{name}.py").write_text(MARKER_MODULE.format(path=str(folder / f"MARK_{name}")))


def markers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("MARK_*"))


def test_a_package_plugin_loads_by_path_under_a_private_name_and_imports_the_standard_library(
    targets: Targets, monkeypatch: pytest.MonkeyPatch
):
    from wemem.models.registry import model_factory

    plugin_package(targets.folder, "json")  # named like the standard library's json, which it must not replace
    (targets.folder / "json" / "linked.py").symlink_to(shutil.__file__)
    monkeypatch.delitem(sys.modules, "wave", raising=False)  # so that importing wave really looks for it
    json_module = sys.modules["json"]
    factory, _ = model_factory("json.sub:Net", str(targets.folder))
    model = factory((5,), 3)
    assert model.body[1].out_features == 16
    module = sys.modules[factory.__module__]
    assert Path(module.WAVE_FILE).parent == Path(shutil.__file__).parent  # the standard library's wave
    assert module.linked is None
    assert sys.modules["json"] is json_module and "json.sub" not in sys.modules and "json.layers" not in sys.modules
    assert factory.__module__.startswith("_wemem_plugin_") and factory.__module__.endswith(".json.sub")
    assert markers(targets.folder) == []
    assert not list(targets.folder.rglob("__pycache__"))  # nothing written beside the user's files


def test_own_code_records_every_file_of_a_package_plugin(targets: Targets):
    from wemem.config import ExperimentConfig

    plugin_package(targets.folder)
    experiment = ExperimentConfig(model="pkg.sub:Net", base_dir=str(targets.folder))
    recorded = experiment.own_code()["model"]
    assert recorded["reference"] == "pkg.sub:Net"
    assert sorted(recorded["files"]) == ["pkg/__init__.py", "pkg/layers.py", "pkg/sub.py"]
    assert recorded["files"]["pkg/__init__.py"] == hashlib.sha256(b"from .layers import WIDTH\n").hexdigest()
    key = experiment.key()
    (targets.folder / "pkg" / "__init__.py").write_text("from .layers import WIDTH  # edited\n")
    assert experiment.key() != key  # an edited __init__ never reuses what the old package trained


def hand_export_of(folder: Path, model: str) -> Path:
    """The export `wemem export` writes of a study of this folder's plug-in (its own_code as the study recorded)."""
    from search.results._export import DEFINITION_KEY, definition_fingerprint
    from wemem.config import ExperimentConfig

    definition = parse_study({**TINY, "model": {"name": model}})
    document = without_none(
        {
            "study": definition.name,
            "seed": definition.study.seed,
            "model": model,
            "dataset": definition.data.model_dump(exclude_none=True),
            "objective": definition.objective.model_dump(),
            "training": definition.training.model_dump(),
            "pruning": definition.pruning.model_dump(),
            "memscore": definition.memscore.model_dump(),
            "attacks": definition.attacks.model_dump(),
            "own_code": ExperimentConfig(model=model, base_dir=str(folder)).own_code(),
            "best": {
                "trial_number": 0,
                "defense": "rmr",
                "settings": {"lambda_mem": 0.1, "risky_fraction": 0.2},
                "metrics": {"test_accuracy": 0.9, "privacy": 0.52, "strongest_attack": "conf"},
            },
        }
    )
    document[DEFINITION_KEY] = definition_fingerprint(document)
    path = folder / "best.toml"
    path.write_text(tomli_w.dumps(document))
    return path


def test_apply_names_the_code_an_export_would_run_and_runs_none_of_it_without_allow_code(
    targets: Targets, capsys: pytest.CaptureFixture
):
    from search import api

    plugin_package(targets.folder)
    export = hand_export_of(targets.folder, "pkg.sub:Net")
    (targets.folder / "pkg" / "__init__.py").write_text(
        MARKER_MODULE.format(path=str(targets.folder / "MARK_init")) + "from .layers import WIDTH\n"
    )
    out = ["--out", str(targets.folder / "applied"), "--cache-dir", str(targets.folder / "cache")]
    message = refused(["apply", str(export), *out], capsys)
    assert "pkg/__init__.py" in message and "changed since the study ran" in message, message
    message = refused(["apply", str(export), *out, "--allow-code"], capsys)  # a changed file: not even then
    assert "pkg/__init__.py" in message, message
    with pytest.raises(WememError, match=r"pkg/__init__.py"):
        api.apply(export, targets.folder / "applied", allow_code=True)

    export = hand_export_of(targets.folder, "pkg.sub:Net")  # the same files as the study's: read, not allowed
    message = refused(["apply", str(export), *out], capsys)
    for file in ("pkg/__init__.py", "pkg/layers.py", "pkg/sub.py"):
        sha256 = hashlib.sha256((targets.folder / file).read_bytes()).hexdigest()
        assert f"{file} sha256 {sha256}" in message, message
    assert "--allow-code" in message
    with pytest.raises(WememError, match="allow_code=True"):
        api.apply(export, targets.folder / "applied")
    assert markers(targets.folder) == [] and not (targets.folder / "applied").exists()


# ---------------------------------------------------------------- no process imports the working directory


def working_directory_modules(folder: Path) -> None:
    for name in ("numpy", "colorsys"):
        (folder / f"{name}.py").write_text(MARKER_MODULE.format(path=str(folder / f"MARK_{name}")))


WORKER_PROBE = """
import json, sys
from search.execution._cluster import init_ray
import ray

init_ray(num_cpus=1)


@ray.remote
def imported():
    import colorsys, numpy
    return [colorsys.__file__, numpy.__file__]


print(json.dumps(ray.get(imported.remote())))
"""


def test_ray_workers_never_import_a_module_of_the_working_directory(tmp_path: Path):
    """Ray puts the driver's working directory first on every worker's sys.path: started by init_ray, it is not
    the folder wemem was started in."""
    working_directory_modules(tmp_path)
    # -I: the driver itself imports nothing of its working directory either (this checks the workers)
    done = subprocess.run([PYTHON, "-I", "-c", WORKER_PROBE], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    colorsys_file, numpy_file = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(colorsys_file).parent == Path(shutil.__file__).parent and "site-packages" in numpy_file
    assert markers(tmp_path) == []


def test_python_m_search_cli_imports_nothing_of_the_working_directory(tmp_path: Path):
    working_directory_modules(tmp_path)
    done = subprocess.run(
        [
            PYTHON,
            "-m",
            "search.cli",
            "run",
            "--serial",
            *TINY_RUN,
            "--out",
            str(tmp_path / "r"),
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "r.json").is_file() and markers(tmp_path) == []


def table(folder: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 4))
    pd.DataFrame({**{f"f{i}": x[:, i] for i in range(4)}, "label": (x[:, 0] + x[:, 1] > 0).astype(int)}).to_csv(
        folder / "data.csv", index=False
    )


def test_a_plugin_study_launched_run_and_applied_in_a_folder_of_received_modules_imports_none_of_them(
    ray_session, targets: Targets, capsys: pytest.CaptureFixture
):
    """One small launch through Ray, a `wemem run` on Ray, and an apply (refused without --allow-code, run with
    it, refused once pkg/__init__.py changed), all in a folder holding numpy.py, colorsys.py and wave.py."""
    folder = targets.folder
    plugin_package(folder)
    table(folder)
    study = {**TINY, "data": {"dataset": "csv:data.csv", "shadows": 2}, "model": {"name": "pkg.sub:Net"}}
    (folder / "study.toml").write_text(tomli_w.dumps(study))
    places = ["--storage", f"sqlite:///{folder / 'w.db'}", "--cache-dir", str(folder / "cache")]
    assert main(["launch", str(folder / "study.toml"), *places]) == 0
    assert main(["export", "attack", "--out", str(folder / "best.toml"), *places]) == 0
    exported = __import__("tomllib").loads((folder / "best.toml").read_text())
    assert sorted(exported["own_code"]["model"]["files"]) == ["pkg/__init__.py", "pkg/layers.py", "pkg/sub.py"]
    capsys.readouterr()

    out = ["--out", str(folder / "applied"), "--cache-dir", str(folder / "cache")]
    message = refused(["apply", str(folder / "best.toml"), *out], capsys)
    assert "--allow-code" in message and "pkg/sub.py sha256" in message
    assert main(["apply", str(folder / "best.toml"), *out, "--allow-code"]) == 0
    printed = capsys.readouterr().out
    assert "pkg/sub.py sha256" in printed and printed.index("pkg/sub.py sha256") < printed.index("rebuilt")
    assert (folder / "applied" / "evaluation.json").is_file()

    assert (
        main(
            [
                "run",
                "--dataset",
                "csv:data.csv",
                "--model",
                "pkg.sub:Net",
                *TINY_RUN,
                "--out",
                str(folder / "result"),
                "--cache-dir",
                str(folder / "cache"),
            ]
        )
        == 0
    )
    assert (folder / "result.json").is_file()

    (folder / "pkg" / "__init__.py").write_text("from .layers import WIDTH  # edited\n")
    message = refused(
        ["apply", str(folder / "best.toml"), *out[:1], str(folder / "again"), *out[2:], "--allow-code"], capsys
    )
    assert "pkg/__init__.py" in message and not (folder / "again").exists()
    assert markers(folder) == []
