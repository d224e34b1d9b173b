"""Every file the tool writes: a bad output path is refused first (exit 2, one message naming the path, the
problem and the fix, the storage unchanged, nothing left behind), and writes are atomic: a failed write (a full
disk, a read-only file system) leaves the old file and no temporary file, and a replaced file is named so."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
import tomli_w
import torch
from test_bad_input import assert_refused, place, run_cli, tree  # noqa: F401  (place: a fixture)
from test_run_cli import TINY

import wemem.files
from search.results._apply import edited_warning
from search.results._export import DEFINITION_KEY
from search.studyfile._exports import read_export
from wemem.assets import _torch_bytes, prepare_assets, save_checked
from wemem.errors import WememError
from wemem.files import check_output_file, check_output_folder, write_atomically
from wemem.memscore import memscore_file_fingerprint, read_memscores_csv


def link(place: Path, name: str, target: str | Path) -> str:
    os.symlink(target, place / name)
    return str(place / name)


def folder(place: Path, *parts: str) -> Path:
    path = place.joinpath(*parts)
    path.mkdir(parents=True)
    return path


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray, the cache and training must not start before the output paths are checked."""
    import search.execution._cluster
    import wemem.assets
    import wemem.memscore

    def started(*args: object, **kwargs: object) -> None:
        raise AssertionError("work started before the output path was checked")

    for module, name in (
        (search.execution._cluster, "init_ray"),
        (wemem.assets, "prepare_assets"),
        (wemem.memscore, "compute_memscores"),
    ):
        monkeypatch.setattr(module, name, started)


def failing_writes(monkeypatch: pytest.MonkeyPatch, code: int, where: Path | None = None) -> None:
    """Every low-level write (in ``where`` only, if given) fails with ``code``, as on a full or read-only disk."""
    real = wemem.files._write_bytes

    def write(handle: int, data: bytes) -> None:
        if where is None or Path(os.readlink(f"/proc/self/fd/{handle}")).parent == where:
            raise OSError(code, os.strerror(code))
        real(handle, data)

    monkeypatch.setattr(wemem.files, "_write_bytes", write)


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp") or ".tmp" in p.name]


# (id, argv builder, expected words): every case is refused before the storage, Ray, the cache or training
CASES: list[tuple[str, Callable[[Path], list[str]], list[str]]] = [
    (
        "export-link-to-dev-full",
        lambda p: ["export", "base", "--out", link(p, "full.toml", "/dev/full")],
        ["full.toml", "a link to /dev/full", "character device", "choose another --out"],
    ),
    (
        "export-into-proc",
        lambda p: ["export", "base", "--out", "/proc/best.toml"],
        ["/proc/best.toml", "does not accept new files", "choose another --out"],
    ),
    (
        "export-onto-folder",
        lambda p: ["export", "base", "--out", str(folder(p, "dir.toml"))],
        ["dir.toml", "is a folder", ".toml or .json"],
    ),
    ("export-wrong-suffix", lambda p: ["export", "base", "--out", str(p / "best.txt")], [".toml or .json"]),
    (
        "export-fifo",
        lambda p: ["export", "base", "--out", (os.mkfifo(p / "pipe.json"), str(p / "pipe.json"))[1]],
        ["pipe.json", "a FIFO"],
    ),
    ("memscore-export-out-folder", lambda p: ["memscore", "export", "--out", str(p)], ["is a folder"]),
    (
        "memscore-export-dev-full",
        lambda p: ["memscore", "export", "--out", "/dev/full"],
        ["/dev/full", "character device"],
    ),
    (
        "memscore-compute-out-proc",
        lambda p: ["memscore", "compute", "--serial", "--out", "/proc/x/scores.csv"],
        ["/proc", "does not accept new files", "--out"],
    ),
    (
        "memscore-compute-out-under-file",
        lambda p: ["memscore", "compute", "--serial", "--out", str(p / "best.toml" / "scores.csv")],
        ["best.toml", "is a file, not a folder", "--out"],
    ),
    (
        "memscore-compute-cache-proc",
        lambda p: ["memscore", "compute", "--serial", "--cache-dir", "/proc/wemem-cache"],
        ["/proc", "does not accept new files", "--cache-dir"],
    ),
    (
        "report-out-file",
        lambda p: ["report", "base", "--out", str(p / "best.toml")],
        ["best.toml", "is a file, not a folder", "--out"],
    ),
    ("report-out-proc", lambda p: ["report", "base", "--out", "/proc/report"], ["/proc", "does not accept new files"]),
    (
        "apply-out-file",
        lambda p: ["apply", str(p / "best.toml"), "--out", str(p / "best.toml")],
        ["is a file, not a folder", "--out"],
    ),
    (
        "apply-model-pt-is-a-folder",
        lambda p: ["apply", str(p / "best.toml"), "--out", str(folder(p, "applied", "model.pt").parent)],
        ["model.pt", "is a folder"],
    ),
    (
        "apply-out-proc",
        lambda p: ["apply", str(p / "best.toml"), "--out", "/proc/applied"],
        ["does not accept new files"],
    ),
    (
        "apply-cache-proc",
        lambda p: ["apply", str(p / "best.toml"), "--out", str(p / "o"), "--cache-dir", "/proc/c"],
        ["/proc", "--cache-dir"],
    ),
    (
        "run-out-proc",
        lambda p: ["run", "--serial", "--out", "/proc/nowhere/results"],
        ["/proc", "does not accept new files", "--out"],
    ),
    (
        "run-out-under-file",
        lambda p: ["run", "--serial", "--out", str(p / "best.toml" / "results")],
        ["is a file, not a folder"],
    ),
    (
        "run-out-link-to-dev-full",
        lambda p: ["run", "--serial", "--out", link(p, "results.json", "/dev/full").removesuffix(".json")],
        ["results.json", "/dev/full", "not a regular file"],
    ),
    (
        "run-cache-proc",
        lambda p: ["run", "--serial", "--cache-dir", "/proc/wemem-cache"],
        ["/proc", "does not accept new files", "--cache-dir"],
    ),
]


@pytest.mark.parametrize("argv_of, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bad_output_path_is_refused_first(
    place: Path, argv_of, expected, no_work, capsys, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("WEMEM_STORAGE", f"sqlite:///{place / 'wemem.db'}")
    monkeypatch.chdir(place)
    argv = argv_of(place)  # its own links, folders and studies are part of the "before"
    assert_refused(place, argv, expected, capsys)


# -------------------------------------------------------------------------------------- atomic writes


def test_a_full_disk_keeps_the_old_export_and_leaves_no_temporary(place: Path, capsys, monkeypatch: pytest.MonkeyPatch):
    url = f"sqlite:///{place / 'wemem.db'}"
    before = tree(place)
    failing_writes(monkeypatch, errno.ENOSPC)
    assert run_cli(["export", "base", "--storage", url, "--out", str(place / "best.toml")]) == 2
    err = capsys.readouterr().err
    assert f"disk full while writing {place / 'best.toml'}: free space on that device or write elsewhere" in err
    assert "Traceback" not in err
    assert tree(place) == before and not temporaries(place)


def test_a_read_only_file_system_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    failing_writes(monkeypatch, errno.EROFS)
    with pytest.raises(WememError, match="read-only"):
        write_atomically(tmp_path / "x.json", "{}")
    assert list(tmp_path.iterdir()) == []


def test_an_export_through_a_link_replaces_the_links_target(place: Path, capsys):
    url = f"sqlite:///{place / 'wemem.db'}"
    (place / "real.toml").write_text("old")
    alias = link(place, "alias.toml", place / "real.toml")
    assert run_cli(["export", "base", "--storage", url, "--out", alias]) == 0
    assert f"replaced existing {alias}" in capsys.readouterr().out
    assert os.path.islink(alias) and tomllib.loads((place / "real.toml").read_text())["study"] == "base"
    assert run_cli(["export", "base", "--storage", url, "--out", str(place / "new.json")]) == 0
    assert f"wrote {place / 'new.json'}" in capsys.readouterr().out


def test_a_new_file_gets_the_usual_mode_and_a_replaced_one_keeps_its_own(tmp_path: Path):
    (tmp_path / "plain").write_text("")
    assert write_atomically(tmp_path / "new", b"x") is False
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == stat.S_IMODE((tmp_path / "plain").stat().st_mode)
    (tmp_path / "private").write_text("")
    (tmp_path / "private").chmod(0o600)
    assert write_atomically(tmp_path / "private", "y") is True
    assert stat.S_IMODE((tmp_path / "private").stat().st_mode) == 0o600
    assert (tmp_path / "private").read_text() == "y"


def test_a_writer_callback_that_fails_leaves_nothing(tmp_path: Path):
    def broken(path: Path) -> None:
        path.write_text("half")
        raise RuntimeError("writer broke")

    with pytest.raises(RuntimeError):
        write_atomically(tmp_path / "x", broken)
    assert list(tmp_path.iterdir()) == []
    write_atomically(tmp_path / "x", lambda path: path.write_text("whole"))
    assert (tmp_path / "x").read_text() == "whole" and list(tmp_path.iterdir()) == [tmp_path / "x"]


def test_checks_create_nothing(tmp_path: Path):
    check_output_file(tmp_path / "a.toml", (".toml",))
    check_output_file(tmp_path / "deep" / "er" / "a.json", create_parents=True)
    check_output_folder(tmp_path / "report" / "inner", ("trials.csv",))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(WememError, match="does not exist; create it first"):
        check_output_file(tmp_path / "deep" / "a.json")


# ------------------------------------------------------------------------------------------ the cache


def test_a_full_disk_in_the_cache_is_a_clear_error_without_leftovers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    failing_writes(monkeypatch, errno.ENOSPC)
    with pytest.raises(WememError, match=r"disk full while writing .*split.pt"):
        save_checked(tmp_path / "split.pt", _torch_bytes({"weights": torch.zeros(3)}))  # torch writes to memory
    assert list(tmp_path.iterdir()) == []  # neither the file, its sidecar nor a temporary


def test_prepare_assets_on_a_full_disk_leaves_no_temporary(
    tiny_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    failing_writes(monkeypatch, errno.ENOSPC)
    with pytest.raises(WememError, match="disk full while writing"):
        prepare_assets(tiny_config, tmp_path / "cache")
    assert not temporaries(tmp_path)


def test_a_read_only_cache_is_refused_before_the_work(tiny_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with pytest.raises(WememError, match=r"/proc.*does not accept new files.*--cache-dir"):
        prepare_assets(tiny_config, "/proc/wemem-cache")
    failing_writes(monkeypatch, errno.EROFS)
    with pytest.raises(WememError, match="read-only"):
        prepare_assets(tiny_config, tmp_path / "cache")
    assert not temporaries(tmp_path)


# ---------------------------------------------------------------------------------------------- run


def test_run_keeps_its_results_when_the_final_write_fails(
    tiny_assets, cache_dir: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
):
    results = tmp_path / "results" / "deep"  # missing folders of the prefix are created (documented in --help)
    failing_writes(monkeypatch, errno.ENOSPC, where=results)
    code = run_cli(
        [
            "run",
            *TINY,
            "--steps",
            "2",
            "--attacks",
            "conf",
            "--serial",
            "--cache-dir",
            str(cache_dir),
            "--out",
            str(results / "r"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert f"disk full while writing {results / 'r.json'}" in err and "the results are saved instead" in err
    rescued = Path(err.split("saved instead (wrote ")[1].split(" and ")[0])
    try:
        assert json.loads(rescued.read_text())["runs"][0]["label"] == "iterative"
        assert rescued.with_suffix(".csv").read_text().startswith("run,")
    finally:
        shutil.rmtree(rescued.parent)
    assert list(results.iterdir()) == []


# -------------------------------------------------------------------------------------- report, apply


def test_report_says_which_files_it_replaced(place: Path, capsys):
    url = f"sqlite:///{place / 'wemem.db'}"
    assert run_cli(["report", "base", "--storage", url, "--out", str(place / "report")]) == 0
    first = capsys.readouterr().out
    assert f"wrote {place / 'report' / 'trials.csv'}" in first and "replaced" not in first
    assert run_cli(["report", "base", "--storage", url, "--out", str(place / "report")]) == 0
    again = capsys.readouterr().out
    assert f"replaced existing {place / 'report' / 'trials.csv'}" in again
    assert f"replaced existing {place / 'report' / 'history.png'}" in again
    assert not temporaries(place)


def edited_export(place: Path, change: Callable[[dict], None]) -> str:
    document = tomllib.loads((place / "best.toml").read_text())
    change(document)
    (place / "edited.toml").write_text(tomli_w.dumps(document))
    return str(place / "edited.toml")


def apply_without_ray(place: Path, export: str, capsys, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    import search.execution._cluster

    monkeypatch.setattr(search.execution._cluster, "init_ray", lambda *args, **kwargs: None)
    monkeypatch.chdir(place)
    code = run_cli(["apply", export, "--out", str(place / "applied")])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out + err


def test_apply_never_takes_the_data_root_from_the_export(place: Path, capsys, monkeypatch: pytest.MonkeyPatch):
    elsewhere = folder(place, "their-data", "cifar-10-batches-py")
    (elsewhere / "data_batch_1").write_bytes(b"not a pickle")  # read, it would fail with another message
    export = edited_export(place, lambda d: d["dataset"].update(dataset="cifar10", data_root=str(elsewhere.parent)))
    before = tree(place)
    code, output = apply_without_ray(place, export, capsys, monkeypatch)
    assert code == 2 and "pass --data-root" in output, output
    assert tree(place) == before  # nothing read into a cache, nothing written: no cache, no applied/


def test_apply_warns_before_the_work_when_the_export_was_edited(place: Path, capsys, monkeypatch: pytest.MonkeyPatch):
    export = edited_export(place, lambda d: d["dataset"].update(dataset="cifar10"))
    code, output = apply_without_ray(place, export, capsys, monkeypatch)
    assert code == 2  # the work (reading cifar10) fails after the warning, for want of --data-root
    assert "was edited after `wemem export` wrote it" in output and "not comparable" in output
    assert output.index("was edited") < output.index("pass --data-root")


def test_apply_does_not_warn_for_an_export_without_the_fingerprint(
    place: Path, capsys, monkeypatch: pytest.MonkeyPatch
):
    def older_export(document: dict) -> None:  # written before exports stored the fingerprint
        document.pop(DEFINITION_KEY)
        document["dataset"]["dataset"] = "cifar10"

    code, output = apply_without_ray(place, edited_export(place, older_export), capsys, monkeypatch)
    assert code == 2 and "pass --data-root" in output and "edited" not in output


def test_an_unedited_export_matches_its_fingerprint_in_toml_and_json(place: Path):
    assert main_export(place, "again.json") == 0
    for name in ("best.toml", "again.json"):
        document = read_export(place / name)
        assert len(document[DEFINITION_KEY]) == 64
        assert edited_warning(document, name) is None
    document = read_export(place / "best.toml")
    document["dataset"]["data_root"] = "/somewhere/else"  # where the data lives is not the experiment
    assert edited_warning(document, "best.toml") is None
    document["training"]["lr"] = 0.5
    assert "was edited" in edited_warning(document, "best.toml")


def main_export(place: Path, name: str) -> int:
    return run_cli(["export", "base", "--storage", f"sqlite:///{place / 'wemem.db'}", "--out", str(place / name)])


# ------------------------------------------------------------------------------------------- mem-scores


def test_a_memscore_csv_with_a_byte_order_mark_keeps_its_order_header(
    tiny_assets, cache_dir: Path, tmp_path: Path, capsys
):
    cache = tmp_path / "cache"
    shutil.copytree(cache_dir, cache)
    common = [*TINY, "--cache-dir", str(cache)]
    exported = tmp_path / "exports" / "ours.csv"  # a missing folder of --out is created, as for run
    assert run_cli(["memscore", "export", *common, "--out", str(exported)]) == 0
    assert f"wrote {exported}" in capsys.readouterr().out
    with_bom = tmp_path / "excel.csv"
    with_bom.write_bytes(b"\xef\xbb\xbf" + exported.read_bytes())  # as a spreadsheet program saves it
    assert memscore_file_fingerprint(with_bom) == memscore_file_fingerprint(exported) is not None
    assert torch.equal(read_memscores_csv(with_bom), read_memscores_csv(exported))
    assert run_cli(["memscore", "import", str(with_bom), *common]) == 0  # verified, no --order needed
    assert "imported 1438 mem-scores" in capsys.readouterr().out
    assert run_cli(["memscore", "export", *common, "--out", str(exported)]) == 0
    assert f"replaced existing {exported}" in capsys.readouterr().out
