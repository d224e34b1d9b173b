"""Peak memory and time of loading a big table (``csv:``, ``parquet:``) or arrays (``npz:``) into the study's pools.

Writes a synthetic table once (default 1,000,000 rows x 50 columns: 47 numeric features, 2 text columns of 8
categories each and a label of 10 classes; the npz holds the same rows as 49 float32 features), then loads
each file in a fresh process through :func:`wemem.data.load_dataset`, the path a study takes, and reports that
process's peak resident memory against what the final tensors hold. Prints one JSON object (never asserts).

    .venv/bin/python benchmarks/bench_big_table.py                       # 1,000,000 x 50, all three formats
    .venv/bin/python benchmarks/bench_big_table.py --rows 100000 --formats parquet
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

NUMERIC, TEXT, CATEGORIES, CLASSES = 47, 2, 8, 10  # 47 + 2 + the label = 50 columns


def table(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    label = rng.integers(0, CLASSES, rows)
    numbers = rng.normal(size=(rows, NUMERIC)).astype(np.float32) + label[:, None] * 0.1
    frame = pd.DataFrame(numbers.round(4), columns=[f"f{j}" for j in range(NUMERIC)])
    for j in range(TEXT):
        frame[f"t{j}"] = pd.Categorical.from_codes(
            rng.integers(0, CATEGORIES, rows), [f"c{k}" for k in range(CATEGORIES)]
        )
    frame["label"] = label
    return frame


def write_files(folder: Path, rows: int, formats: list[str]) -> dict[str, Path]:
    """The benchmark's files, written unless present (the CSV takes a minute to write)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {kind: folder / f"table_{rows}.{kind}" for kind in formats}
    missing = [kind for kind, path in paths.items() if not path.exists()]
    if missing:
        frame = table(rows)
        for kind in missing:
            if kind == "csv":
                frame.to_csv(paths[kind], index=False)
            elif kind == "parquet":
                frame.to_parquet(paths[kind], index=False)
            else:
                features = frame.drop(columns=["label"]).apply(lambda c: c.cat.codes if c.dtype == "category" else c)
                np.savez(paths[kind], x=features.to_numpy(np.float32), y=frame["label"].to_numpy())
    return paths


def memory(field: str) -> int:
    """This process's ``VmRSS`` (resident now) or ``VmHWM`` (peak resident) in bytes, from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def measure(kind: str, path: str) -> dict:
    """In this (fresh) process: load the file as a study does; peak RSS over the load, against the pools' size.
    The peak is reset once the imports are done (not getrusage's ru_maxrss, which a child inherits from the
    process that started it)."""
    from wemem.data import load_dataset

    Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak resident size to the current one
    before = memory("VmRSS")
    start = time.perf_counter()
    pools = load_dataset(f"{kind}:{path}", None, 7)
    seconds = time.perf_counter() - start
    peak = memory("VmHWM")
    tensors = pools.x.nbytes + pools.y.nbytes
    return {
        "format": kind,
        "file_bytes": Path(path).stat().st_size,
        "shape": list(pools.x.shape),
        "seconds": round(seconds, 2),
        "rss_after_imports_mib": round(before / 2**20),
        "peak_rss_mib": round(peak / 2**20),
        "tensors_mib": round(tensors / 2**20),
        "load_over_tensors": round((peak - before) / tensors, 2),  # the load's own peak, in final tensors
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--formats", nargs="+", default=["csv", "parquet", "npz"], choices=["csv", "parquet", "npz"])
    parser.add_argument("--folder", type=Path, default=Path("/tmp/wemem-bench-big-table"))
    parser.add_argument("--measure", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)  # the child's part
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return
    paths = write_files(args.folder, args.rows, args.formats)
    results = []
    for kind, path in paths.items():
        child = subprocess.run(
            [sys.executable, __file__, "--measure", kind, str(path)], capture_output=True, text=True, check=False
        )
        results.append(json.loads(child.stdout) if child.returncode == 0 else {"format": kind, "error": child.stderr})
    print(json.dumps({"rows": args.rows, "columns": NUMERIC + TEXT + 1, "loads": results}, indent=2))


if __name__ == "__main__":
    main()
