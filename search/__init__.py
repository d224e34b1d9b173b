"""search: studies over defense settings, one package per concept, lowest layer first:

- ``studyfile``: the study file's schema and every defense's search space;
- ``storage``: storage URLs and secrets, every stored attribute (``records``), heartbeats and retries;
- ``study``: where a study lives and runs, the ``OpenStudy`` object, creating/loading/opening, ranking trials;
- ``execution``: Ray (cluster, jobs), the trainable, the Tune loop, launch and resume;
- ``confirm``: re-evaluating the best settings on fresh seeds;
- ``results``: printed text, export, apply, report;
- ``cli``: the ``wemem`` command line.

Beside them, lowest of all, ``exceptions`` (the errors by kind) and, above ``results``, ``runs`` (``wemem run``
and mem-scores); ``api`` is every command as a function, and ``cli`` parses arguments and calls it.

A module imports only from its own layer or lower ones (``tests/test_layout.py`` checks it). The public surface
is the API (:mod:`search.api`: every command as a function, with its typed results) and the errors by kind; this
``__init__`` imports only the light ``exceptions`` and the API on first use: Ray workers import this package
before their job module.
"""

from wemem._exports import lazy_exports

from .exceptions import BadInputError, InterruptedStudyError, StorageError, WememError

_API = (
    "ArtifactAudit",
    "DeletedStudy",
    "MemScores",
    "RunResult",
    "StudyListing",
    "StudyResult",
    "StudyStatus",
    "TrialStatus",
    "apply",
    "audit",
    "confirm",
    "delete",
    "export",
    "launch",
    "memscore_compute",
    "memscore_export",
    "memscore_import",
    "report",
    "results",
    "resume",
    "run",
    "status",
    "studies",
    "trial_status",
)
# the export of a best setting read for the user's own training loop (wemem.loop): no command, so not in the API
_LOOP = {"load_setting": "search.results"}
__getattr__ = lazy_exports(__name__, {**dict.fromkeys(_API, "search.api"), **_LOOP})
__all__ = ["BadInputError", "InterruptedStudyError", "StorageError", "WememError", *_API, *_LOOP]
