"""Run the example with the Python API: launch the study, read its trials, confirm the best setting, export it.

python examples/own_model/run.py [--storage sqlite:///own_model.db] [--cache-dir DIR]
"""

import argparse
from pathlib import Path

from search import api

HERE = Path(__file__).resolve().parent

parser = argparse.ArgumentParser()
parser.add_argument("--storage", default="sqlite:///own_model.db")
parser.add_argument("--cache-dir", default=None)
parser.add_argument("--out", default="own_model_best.toml")
args = parser.parse_args()

study = api.launch(HERE / "study.toml", storage=args.storage, cache_dir=args.cache_dir)
print(study.trials[["number", "state", "defense", "utility", "privacy"]].to_string(index=False))
confirmed = api.confirm(study.name, seeds=2, storage=args.storage, cache_dir=args.cache_dir)
best = confirmed.candidates[0]
print(
    f"confirmed on {len(confirmed.seeds)} fresh seeds: accuracy {best.utility.mean:.4f}, "
    f"leakage {best.privacy.mean:.4f}"
)
print(f"wrote {api.export(study.name, args.out, storage=args.storage)}")
