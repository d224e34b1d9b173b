"""The result verbs: ``export``, ``apply`` and ``report``."""

from __future__ import annotations

import argparse

from .common import Command, echo, options_from


def _export(args: argparse.Namespace) -> int:
    from wemem.files import check_output_file, wrote

    from ..results.export import export_document, write_export
    from ..study import open_study

    check_output_file(args.out, (".toml", ".json"))  # before the storage is opened
    opened = open_study(args.name, options_from(args))
    echo(wrote((args.out, write_export(export_document(opened), args.out))))
    return 0


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="study name")
    p.add_argument("--out", required=True, help="output file ending in .toml or .json")


EXPORT = Command("export", "write the best setting (or the Pareto set) with its metrics as TOML or JSON",
                 _export_args, _export)


def _apply(args: argparse.Namespace) -> int:
    from wemem.files import check_writable_folder

    from ..execution import cluster
    from ..results.apply import apply_export, check_apply_out, load_export
    from ..study import resolve_cache_dir

    options = options_from(args)
    # a bad --out, --cache-dir or export file is refused before Ray starts and the minutes of work
    check_apply_out(args.out)
    cache_dir = resolve_cache_dir(options)
    check_writable_folder(cache_dir, "--cache-dir")
    load_export(args.export_file, args.trial, allow_code=args.allow_code)
    cluster.init_ray(options.ray_address)
    apply_export(args.export_file, args.out, cache_dir, options.data_root, args.trial, cluster.task_share, echo,
                 args.allow_code)
    return 0


def _apply_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("export_file", help="a file written by `wemem export`")
    p.add_argument("--out", required=True, help="output folder for model.pt and evaluation.json")
    p.add_argument("--trial", type=int, default=None, help="which trial of an exported Pareto set")
    p.add_argument("--allow-code", action="store_true",
                   help="run the plug-in code (model or loader modules) the export names, after reading it: apply "
                        "lists those files with their SHA-256 and refuses to run them without this flag")


APPLY = Command("apply", "rebuild the defended pruned model of an export, save its weights and masks, re-evaluate it",
                _apply_args, _apply)


def _report(args: argparse.Namespace) -> int:
    from ..results.report import check_report_out, write_report
    from ..study import open_study

    check_report_out(args.out)  # before the storage is opened
    write_report(open_study(args.name, options_from(args)), args.out, echo)
    return 0


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="study name")
    p.add_argument("--out", required=True, help="output folder (report.html there opens offline in any browser)")


REPORT = Command("report", "write a study's audit (report.html, report.json), its trials table (CSV, parquet) and "
                 "PNG plots", _report_args, _report)
