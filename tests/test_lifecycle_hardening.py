"""Issue 31: a signal at any failpoint leaves no trial RUNNING and resume finishes the study; a refused launch
leaves no storage behind; resume refuses a read-only storage before any work; launch refuses another program's
SQLite file; and the weak messages, each named plainly."""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import sqlite3
import time
from pathlib import Path

import optuna
import pytest
import tomli_w
from helpers import finished_rmr_study
from optuna.trial import TrialState
from test_launchers import finish, ray_address, start_launcher, trials_in

from search.cli import main
from search.execution._launcher import resume
from search.storage import FAIL_REASON, open_storage, retried_from
from search.study import Options

ROOT = Path(__file__).parent.parent
TINY = {
    "study": {"name": "tiny", "n_trials": 2, "seed": 7, "sampler": "random"},
    "data": {"dataset": "digits", "shadows": 1},
    "training": {"pretrain_epochs": 2, "finetune_epochs": 2, "patience": 50},
    "pruning": {"sparsity": 0.6, "steps": 1},
    "memscore": {"models": 2},
    "attacks": {"names": ["conf", "hconf"]},
    "search": {"defenses": ["rmr"], "enqueue_reference": False},
    "resources": {"cpus_per_trial": 2, "max_concurrent_trials": 1},
}
# per-round reports reach the launcher mid-trial (round_result); no trial is ever pruned
ROUND_REPORTS = {"early_stopping": "median", "early_stopping_startup_trials": 1000}


def tiny_study(folder: Path, **sections: dict) -> Path:
    data = {key: {**value, **sections.get(key, {})} for key, value in TINY.items()}
    path = folder / "tiny.toml"
    path.write_text(tomli_w.dumps(data))
    return path


def run_cli(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit_info:  # argparse's own errors
        return int(exit_info.code)


# ------------------------------------------------------------------- a signal at every failpoint (item 1)

# Every failpoint of wemem/ and search/, by where its signal lands, with the trials a study needs to reach it.
# The launcher's own: it must stop cleanly (exit 130) with no trial RUNNING.
LAUNCHER_FAILPOINTS = {"after_ask": 1, "round_result": 1, "after_tell": 2, "after_split": 1}
# reached in a Ray worker (the first job of the first trial): the launcher goes on
WORKER_FAILPOINTS = {"ray_task": 2}
# reached by `wemem confirm`, which runs no trial: tests/test_confirm.py stops it there
CONFIRM_FAILPOINTS = {"confirm_run_stored"}


def test_the_signal_tests_cover_every_failpoint():
    named = {
        name
        for package in ("wemem", "search")
        for path in (ROOT / package).rglob("*.py")
        for name in re.findall(r"\bfailpoint\(\"(\w+)\"\)", path.read_text())
    }
    assert named == set(LAUNCHER_FAILPOINTS) | set(WORKER_FAILPOINTS) | CONFIRM_FAILPOINTS


@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One cache folder for every case: the first launcher computes the shared work, the others reuse it."""
    return str(tmp_path_factory.mktemp("hardening-cache"))


def without_split(cache: str, folder: Path) -> str:
    """A copy of ``cache`` without the split, so that a launcher computes it (reaching after_split) and reuses
    the rest of the shared work: the split is a seeded permutation, the same again."""
    copy = folder / "cache"
    shutil.copytree(cache, copy, ignore=shutil.ignore_patterns("ray-results"))
    for split in copy.glob("*/split.pt*"):
        split.unlink()
    return str(copy)


def interrupted_launch(tmp_path: Path, cache: str, point: str, failpoints: str, n_trials: int) -> tuple[int, str, str]:
    storage = f"sqlite:///{tmp_path / 'signal.db'}"
    study = tiny_study(tmp_path, study={"n_trials": n_trials}, search=ROUND_REPORTS if point == "round_result" else {})
    log = tmp_path / "launcher.log"
    launcher = start_launcher(
        ["launch", str(study), "--storage", storage, "--cache-dir", cache, "--ray-address", ray_address()],
        log,
        failpoints=failpoints,
    )
    return finish(launcher, log), log.read_text(), storage


def assert_resume_finishes(storage: str, cache: str, n_trials: int) -> None:
    study = resume("tiny", Options(storage=storage, cache_dir=cache), echo=lambda line: None).study
    trials = study.get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert len([t for t in trials if t.state == TrialState.COMPLETE]) == n_trials


# SIGTERM at every launcher failpoint; SIGINT at the two cheap ones. In the launcher both end in the same
# KeyboardInterrupt (search.cli._main maps SIGTERM onto it, signals_deferred holds both alike), so SIGINT at the
# slow per-round and after-tell points would repeat the TERM cases' path at 70 s of the suite's time.
SIGNAL_CASES = [(point, "TERM") for point in LAUNCHER_FAILPOINTS] + [("after_ask", "INT"), ("after_split", "INT")]


@pytest.mark.e2e
@pytest.mark.parametrize("point, signal_name", SIGNAL_CASES)
def test_a_signal_at_a_launcher_failpoint_leaves_no_trial_running(
    ray_session, tmp_path: Path, warm_cache: str, point: str, signal_name: str
):
    cache = without_split(warm_cache, tmp_path) if point == "after_split" else warm_cache
    n_trials = LAUNCHER_FAILPOINTS[point]
    code, log, storage = interrupted_launch(tmp_path, cache, point, f"{point}:{signal_name}", n_trials)
    assert code == 130, log
    assert "interrupted" in log and "wemem resume tiny" in log and "Traceback" not in log
    trials = trials_in(storage, "tiny")
    assert not [t for t in trials if t.state == TrialState.RUNNING], log
    for trial in trials:
        if trial.state == TrialState.FAIL:
            assert "interrupted" in trial.user_attrs[FAIL_REASON]
    if point == "round_result":  # stopped mid-trial, between its rounds: its setting waits to run again
        [stopped] = [t for t in trials if t.state == TrialState.FAIL]
        [retry] = [t for t in trials if t.state == TrialState.WAITING]
        assert retried_from(retry) == stopped.number and retry.params == stopped.params
    assert_resume_finishes(storage, cache, n_trials)


@pytest.mark.e2e
@pytest.mark.parametrize("signal_name, failed", [("TERM", 1), ("INT", 0)])
@pytest.mark.parametrize("point", list(WORKER_FAILPOINTS))
def test_a_signal_at_a_worker_failpoint_fails_that_trial_alone(
    ray_session, tmp_path: Path, warm_cache: str, point: str, signal_name: str, failed: int
):
    """SIGTERM kills the worker, and its trial fails with the reason; a Ray worker carries on through SIGINT.
    The launcher is not signalled: it goes on, and no trial is left RUNNING."""
    token = tmp_path / "token"
    token.touch()  # fires once, in the first job that reaches it
    n_trials = WORKER_FAILPOINTS[point]
    code, log, storage = interrupted_launch(tmp_path, warm_cache, point, f"{point}:{signal_name}@{token}", n_trials)
    assert not token.exists() and code == 0, log
    trials = trials_in(storage, "tiny")
    assert not [t for t in trials if t.state == TrialState.RUNNING], log
    failures = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failures) == failed and all(t.user_attrs[FAIL_REASON] for t in failures), log
    assert_resume_finishes(storage, warm_cache, n_trials)


def test_a_signal_right_after_the_ask_is_failed_by_the_interrupt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The same stop in this process, without Ray: the trial asked a moment before the signal is failed."""
    from test_lifecycle import searcher_for

    from wemem.faults import ENV as FAILPOINTS_ENV

    searcher, _ = searcher_for(f"sqlite:///{tmp_path / 'x.db'}")
    monkeypatch.setenv(FAILPOINTS_ENV, "after_ask:INT")
    with pytest.raises(KeyboardInterrupt):
        searcher.suggest("a")
    assert searcher.interrupt() == [0]
    [trial] = searcher.study.get_trials()
    assert trial.state == TrialState.FAIL and "interrupted" in trial.user_attrs[FAIL_REASON]


def test_a_signal_inside_the_ask_waits_until_the_trial_is_recorded(tmp_path: Path):
    from test_lifecycle import searcher_for

    searcher, _ = searcher_for(f"sqlite:///{tmp_path / 'x.db'}")
    ask = searcher.study.ask

    def interrupted_ask(*args: object, **kwargs: object) -> optuna.Trial:
        trial = ask(*args, **kwargs)  # stored RUNNING, not yet returned
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # time enough for the handler to run, were it not held
        return trial

    searcher.study.ask = interrupted_ask
    with pytest.raises(KeyboardInterrupt):
        searcher.suggest("a")
    assert list(searcher.asked) == [0]
    assert searcher.interrupt() == [0]
    assert [t.state for t in searcher.study.get_trials()] == [TrialState.FAIL]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is back


# ----------------------------------------------------------------- a refused launch leaves nothing (item 2)


def study_names_in(path: Path) -> list[str]:
    return sorted(s.study_name for s in optuna.get_all_study_summaries(f"sqlite:///{path}"))


def other_study(path: Path) -> None:
    """A storage that already holds someone's study: it must stay as it is."""
    storage = open_storage(f"sqlite:///{path}")
    optuna.create_study(study_name="someone", storage=storage)
    storage.engine.dispose()


def full_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache folder takes no more data: its first write, in the shared work after the study exists, fails
    as a full disk does (the folder itself passed the check: creating an empty file needs no free block)."""
    import wemem.assets
    from wemem.files import write_error

    def no_space(path: str | Path, content: object) -> bool:
        raise write_error(Path(path), OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))

    monkeypatch.setattr(wemem.assets, "write_atomically", no_space)


REFUSALS = {
    "a trial the cluster cannot place": (["--cpus-per-trial", "1000"], None, "1000 CPU"),
    "a full cache folder": ([], full_disk, "disk full"),
}


@pytest.mark.parametrize("existing", [False, True], ids=["new-file", "existing-storage"])
@pytest.mark.parametrize("refusal", list(REFUSALS))
def test_a_launch_refused_after_its_checks_leaves_no_study_and_no_file(
    ray_session, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch, refusal: str, existing: bool
):
    flags, setup, words = REFUSALS[refusal]
    database = tmp_path / "refused.db"
    if existing:
        other_study(database)
    if setup is not None:
        setup(monkeypatch)
    code = run_cli(
        [
            "launch",
            str(tiny_study(tmp_path)),
            "--storage",
            f"sqlite:///{database}",
            "--cache-dir",
            str(tmp_path / "cache"),
            *flags,
        ]
    )
    assert code == 2 and words in capsys.readouterr().err
    if existing:
        assert study_names_in(database) == ["someone"]
    else:
        assert not database.exists() and not list(tmp_path.glob("refused.db*"))


# --------------------------------------------------------------- resume refuses a read-only storage (item 3)


@pytest.fixture
def stored(tmp_path: Path) -> Path:
    """A storage holding one finished study of one shadow model (its reference and two complete trials)."""
    database = tmp_path / "wemem.db"
    storage = finished_rmr_study(
        f"sqlite:///{database}", {**TINY, "study": dict(TINY["study"], name="base")}, str(tmp_path / "cache")
    )
    storage.engine.dispose()
    return database


@pytest.fixture
def nothing_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Starting Ray or the shared work fails the test: a refusal must come first."""
    import search.confirm._run
    import search.execution._cluster
    import search.execution._launcher

    def refused(*args: object, **kwargs: object) -> None:
        raise AssertionError("Ray or the shared work started before the refusal")

    for module, name in (
        (search.execution._launcher, "attach_ray"),
        (search.execution._launcher, "run_study"),
        (search.execution._cluster, "init_ray"),
        (search.confirm._run, "confirm_study"),
    ):
        monkeypatch.setattr(module, name, refused)


def read_only_by_uri(database: Path) -> str:
    return f"sqlite:///file:{database}?mode=ro&uri=true"


def read_only_by_mode(database: Path) -> str:
    database.chmod(0o444)
    return f"sqlite:///{database}"


def read_only_by_folder(database: Path) -> str:
    database.parent.chmod(0o555)  # SQLite cannot create its journal beside the file
    return f"sqlite:///{database}"


@pytest.mark.parametrize(
    "read_only",
    [read_only_by_uri, read_only_by_mode, read_only_by_folder],
    ids=["uri-mode-ro", "file-0444", "folder-0555"],
)
def test_resume_refuses_a_read_only_storage_before_any_work(stored: Path, nothing_runs, capsys, read_only):
    if read_only is not read_only_by_uri and os.geteuid() == 0:
        pytest.skip("root writes through file modes; the mode=ro URI covers the same refusal")
    before = stored.read_bytes()
    try:
        code = run_cli(["resume", "base", "--storage", read_only(stored)])
    finally:
        stored.parent.chmod(0o755)
        stored.chmod(0o644)
    err = capsys.readouterr().err
    assert code == 2 and "read-only" in err and "writable" in err, err
    assert stored.read_bytes() == before


# ---------------------------------------------------------- launch refuses another program's tables (item 4)


def foreign_database(folder: Path) -> Path:
    path = folder / "other.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE notes (body TEXT)")
        connection.execute("CREATE TABLE users (name TEXT)")
        connection.execute("INSERT INTO notes VALUES ('keep me')")
    connection.close()
    return path


def test_launch_refuses_a_sqlite_file_with_foreign_tables_and_leaves_it_as_it_was(tmp_path: Path, nothing_runs, capsys):
    database = foreign_database(tmp_path)
    before = database.read_bytes()
    code = run_cli(["launch", str(tiny_study(tmp_path)), "--storage", f"sqlite:///{database}"])
    err = capsys.readouterr().err
    assert code == 2 and "notes, users" in err and "--allow-foreign-tables" in err, err
    assert database.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db", "tiny.toml"]


def test_allow_foreign_tables_launches_beside_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    import search.execution._launcher
    from wemem.errors import WememError

    def reached(*args: object) -> None:
        raise WememError("reached Ray")

    monkeypatch.setattr(search.execution._launcher, "attach_ray", reached)
    database = foreign_database(tmp_path)
    assert (
        run_cli(["launch", str(tiny_study(tmp_path)), "--storage", f"sqlite:///{database}", "--allow-foreign-tables"])
        == 2
    )
    assert "reached Ray" in capsys.readouterr().err
    with sqlite3.connect(database) as connection:
        assert connection.execute("SELECT body FROM notes").fetchall() == [("keep me",)]
    connection.close()
    assert "--allow-foreign-tables" in help_of("launch", capsys)


def help_of(command: str, capsys: pytest.CaptureFixture) -> str:
    assert run_cli([command, "--help"]) == 0
    return " ".join(capsys.readouterr().out.split())


# ----------------------------------------------------------------------------- the weak messages (items 5-10)


def test_confirm_with_too_few_shadows_for_lira_names_the_attacks_it_can_run(stored: Path, nothing_runs, capsys):
    from wemem.attacks import ATTACKS, runnable_attacks

    assert run_cli(["confirm", "base", "--attacks", "all", "--storage", f"sqlite:///{stored}"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    runnable = runnable_attacks(1)
    assert "lira" not in runnable and "conf" in runnable and len(runnable) == len(ATTACKS.names()) - 1
    assert "'lira' needs at least 2 shadow models (got 1)" in err
    assert f"these attacks can run: {','.join(runnable)} (--attacks {','.join(runnable)})" in err


def write_bytes(folder: Path, name: str, content: bytes) -> Path:
    path = folder / name
    path.write_bytes(content)
    return path


TABLE = "name,size,label\ncafé,1.5,good\nthé,2.5,bad\n"


@pytest.mark.parametrize(
    "encoding, found",
    [
        ("latin-1", "byte 0xe9"),
        ("cp1252", "Latin-1 or Windows-1252"),
        ("utf-16", "UTF-16, by its byte-order mark ff fe"),
        ("utf-32", "UTF-32, by its byte-order mark ff fe 00 00"),
    ],
)
def test_a_csv_that_is_not_utf8_is_named_as_an_encoding_problem(tmp_path: Path, encoding: str, found: str):
    from wemem.data.custom import read_table
    from wemem.errors import WememError

    path = write_bytes(tmp_path, "t.csv", TABLE.encode(encoding))
    with pytest.raises(WememError) as error:
        read_table("csv", path)
    assert "the file is not UTF-8 (found " in str(error.value) and found in str(error.value)
    assert str(error.value).endswith("save it as UTF-8")


def test_a_binary_file_given_as_csv_is_still_named_binary(tmp_path: Path):
    from wemem.data.custom import read_table
    from wemem.errors import WememError

    path = write_bytes(tmp_path, "t.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xd8")
    with pytest.raises(WememError, match="not a text table"):
        read_table("csv", path)


@pytest.mark.parametrize(
    "content, words",
    [
        ("a,b,label\n", ["has no rows, only a header (a, b, label)", "add the samples"]),
        ("a,a,b,b,label\n1,2,3,4,x\n5,6,7,8,y\n", ["duplicate column names ('a', 'b')", "a name of its own"]),
    ],
)
def test_a_header_only_or_duplicate_column_csv_is_refused_by_name(tmp_path: Path, content: str, words: list[str]):
    from wemem.data.custom import read_table
    from wemem.errors import WememError

    with pytest.raises(WememError) as error:
        read_table("csv", write_bytes(tmp_path, "t.csv", content.encode()))
    assert all(w in str(error.value) for w in words), error.value


def test_a_real_column_named_like_a_renamed_duplicate_is_kept(tmp_path: Path):
    from wemem.data.custom import read_table

    frame = read_table("csv", write_bytes(tmp_path, "t.csv", b"a,a.1,label\n1,2,x\n3,4,y\n"))
    assert list(frame.columns) == ["a", "a.1", "label"]


def test_launch_of_a_latin1_table_exits_2_with_the_encoding_named(tmp_path: Path, nothing_runs, capsys):
    write_bytes(tmp_path, "t.csv", (TABLE * 20).encode("latin-1"))
    study = tiny_study(tmp_path, data={"dataset": "csv:t.csv", "label": "label"})
    assert run_cli(["launch", str(study), "--storage", f"sqlite:///{tmp_path / 'w.db'}"]) == 2
    assert "not UTF-8" in capsys.readouterr().err and not (tmp_path / "w.db").exists()


def test_200000_unknown_keys_give_a_bounded_message():
    from search.studyfile import parse_study
    from wemem.defenses import make_defense
    from wemem.errors import WememError

    keys = {f"key{i}": 1 for i in range(200_000)}
    with pytest.raises(WememError) as error:
        parse_study({"study": {"name": "x", **keys}})
    lines = str(error.value).splitlines()
    assert (
        len(lines) == 12
        and lines[1] == "  [study.key0] unknown key (check the spelling; see studies/quickstart.toml for every key)"
    )
    assert lines[-1] == "  and 199,990 more"
    with pytest.raises(WememError) as error:
        make_defense("rmr", keys)
    assert len(str(error.value)) < 2000 and "and 199,990 more" in str(error.value)


def test_confirm_seeds_have_a_stated_maximum_and_never_wrap(stored: Path, nothing_runs, capsys):
    from search.confirm import confirmation_seeds
    from wemem.config import MAX_SEED
    from wemem.errors import WememError

    assert "2 to 100" in help_of("confirm", capsys)
    assert run_cli(["confirm", "base", "--seeds", "101", "--storage", f"sqlite:///{stored}"]) == 2
    assert "--seeds takes 2 to 100" in capsys.readouterr().err
    assert confirmation_seeds(MAX_SEED - 3000, 3) == [MAX_SEED - 2000, MAX_SEED - 1000, MAX_SEED]
    with pytest.raises(WememError, match=r"leaves room for 2 fresh seed.*pass --seeds 2 or fewer"):
        confirmation_seeds(MAX_SEED - 2999, 3)
    with pytest.raises(WememError, match="cannot be confirmed; launch it again with a smaller"):
        confirmation_seeds(MAX_SEED - 1500, 2)


def test_memscore_refuses_a_file_it_would_ignore(tmp_path: Path, capsys):
    for action in ("export", "compute"):
        argv = [
            "memscore",
            action,
            str(tmp_path / "scores.csv"),
            "--out",
            str(tmp_path / "copy.csv"),
            "--cache-dir",
            str(tmp_path / "cache"),
        ]
        assert run_cli(argv) == 2
        err = capsys.readouterr().err
        assert f"memscore {action} takes no FILE" in err and f"--out {tmp_path / 'scores.csv'}" in err, err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "call, words",
    [
        (
            lambda api: api.launch("s.toml", resources={"cpu": 2}),
            ["unknown key(s) 'cpu'", "cpus_per_trial, gpus_per_trial, max_concurrent_trials"],
        ),
        (lambda api: api.launch("s.toml", resources=[2]), ["resources takes a dict"]),
        (lambda api: api.launch("s.toml", storage=5), ["storage takes a storage URL", "got int 5"]),
        (lambda api: api.launch("s.toml", cache_dir=3.5), ["cache_dir takes a folder path"]),
        (lambda api: api.launch("s.toml", echo="loud"), ["echo takes a function"]),
        (lambda api: api.resume(7), ["name takes a study name"]),
        (lambda api: api.resume("s", ray_address=6379), ["ray_address takes a Ray address"]),
        (lambda api: api.results("s", data_root=1), ["data_root takes a folder path"]),
        (lambda api: api.export("s", None), ["path takes a file or folder path"]),
        (lambda api: api.apply(3, "out"), ["export_file takes a file or folder path"]),
    ],
)
def test_the_api_refuses_wrong_argument_types_with_our_error(call, words):
    from search import api
    from wemem.errors import WememError

    with pytest.raises(WememError) as error:
        call(api)
    assert all(w in str(error.value) for w in words), error.value
