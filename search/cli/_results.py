"""The result verbs: ``export``, ``apply``, ``audit`` and ``report``."""

from __future__ import annotations

import argparse

from .. import api
from ._common import Command, echo, places, shipped_work


def _export(args: argparse.Namespace) -> int:
    api.export(args.name, args.out, **places(args), echo=echo)
    return 0


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="study name")
    p.add_argument("--out", required=True, help="output file ending in .toml or .json")


EXPORT = Command(
    "export", "write the best setting (or the Pareto set) with its metrics as TOML or JSON", _export_args, _export
)


def _apply(args: argparse.Namespace) -> int:
    api.apply(args.export_file, args.out, trial=args.trial, allow_code=args.allow_code, **shipped_work(args))
    return 0


def _apply_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("export_file", help="a file written by `wemem export`")
    p.add_argument(
        "--out",
        required=True,
        help="output folder for model.safetensors, model.sparse.safetensors, model.onnx, model_card.md/.json, "
        "model.pt and evaluation.json",
    )
    p.add_argument("--trial", type=int, default=None, help="which trial of an exported Pareto set")
    p.add_argument(
        "--allow-code",
        action="store_true",
        help="run the plug-in code (model or loader modules) the export names, after reading it: apply "
        "lists those files with their SHA-256 and refuses to run them without this flag",
    )


APPLY = Command(
    "apply",
    "rebuild the defended pruned model of an export, save its weights and masks, re-evaluate it",
    _apply_args,
    _apply,
)


def _report(args: argparse.Namespace) -> int:
    api.report(args.name, args.out, **places(args), echo=echo)
    return 0


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="study name")
    p.add_argument("--out", required=True, help="output folder (report.html there opens offline in any browser)")


REPORT = Command(
    "report",
    "write a study's audit (report.html, report.json), its trials table (CSV, parquet) and PNG plots",
    _report_args,
    _report,
)


def _audit(args: argparse.Namespace) -> int:
    audited = api.audit(
        args.artifact,
        study=args.study,
        export_file=args.export,
        trial=args.trial,
        storage=args.storage,
        **shipped_work(args),
    )
    for line in audited.lines():
        echo(line)
    return 0


def _audit_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("artifact", help="the model file: a .onnx or .safetensors (as `wemem apply` writes them)")
    p.add_argument("--study", required=True, help="the study whose attack suite, targets and shadows audit it")
    p.add_argument(
        "--export",
        default=None,
        help="an export file of the study naming the file's setting, for a file without wemem metadata",
    )
    p.add_argument("--trial", type=int, default=None, help="which trial of an exported Pareto set (with --export)")


AUDIT = Command(
    "audit",
    "run a study's attack suite against a shipped model file's own outputs and store the leakage with the study",
    _audit_args,
    _audit,
)
