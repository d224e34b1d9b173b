"""Start a study from a model you trained yourself: what a user does before wemem, then the study file.

Marks a seeded half of a table's rows as the training rows (a ``train`` column), encodes the table exactly as
wemem will (``wemem.data.custom.fit_encoding``/``encode_table``: numbers standardized, text one-hot), trains
``model:Net`` on the training rows with plain PyTorch, saves its ``state_dict`` and writes a study file that
starts from it (``[model] checkpoint``, ``[data] member_column``)::

    python examples/own_model/train_outside.py --table examples/own_model/penguins.csv --label species --out DIR
    wemem launch DIR/study.toml

With your own preprocessing instead of this encoding, write a loader plug-in that applies it (see
docs/own_model.md): the checkpoint only means something on features encoded exactly as in its training.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import tomli_w
import torch

from wemem.data.custom import encode_table, fit_encoding

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from model import Net  # noqa: E402  (the example's model, beside this script)

parser = argparse.ArgumentParser()
parser.add_argument("--table", required=True, help="a CSV table")
parser.add_argument("--label", required=True, help="its label column")
parser.add_argument("--out", required=True, help="folder for the marked table, victim.pt and study.toml")
parser.add_argument("--epochs", type=int, default=100)
parser.add_argument("--trials", type=int, default=6)
args = parser.parse_args()

out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
frame = pd.read_csv(args.table).dropna()
frame["train"] = np.random.default_rng(0).permutation(len(frame)) < len(frame) // 2
frame.to_csv(out / "table.csv", index=False)

x, y = encode_table(frame, fit_encoding(frame, args.label, exclude=("train",)))
members = frame["train"].to_numpy()
features, labels = torch.as_tensor(x[members]), torch.as_tensor(y[members])
torch.manual_seed(0)
model = Net((x.shape[1],), int(y.max()) + 1)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
for _ in range(args.epochs):
    for batch in torch.randperm(len(labels)).split(64):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(features[batch]), labels[batch]).backward()
        optimizer.step()
model.eval()
with torch.no_grad():
    predicted = model(torch.as_tensor(x)).argmax(1).numpy()
print(
    f"trained outside wemem on {members.sum()} rows: accuracy {np.mean(predicted[members] == y[members]):.4f} "
    f"on them, {np.mean(predicted[~members] == y[~members]):.4f} on the {(~members).sum()} others"
)
torch.save(model.state_dict(), out / "victim.pt")
(out / "model.py").write_text((HERE / "model.py").read_text())  # plug-ins are imported from the study's folder

study = {
    "study": {"name": f"{Path(args.table).stem}_checkpoint", "n_trials": args.trials, "seed": 7},
    "data": {"dataset": "csv:table.csv", "label": args.label, "member_column": "train", "shadows": 2},
    "model": {"name": "model:Net", "checkpoint": "victim.pt"},
    "training": {"batch_size": 64, "pretrain_epochs": args.epochs, "finetune_epochs": 10, "patience": 10},
    "pruning": {"sparsity": 0.6, "steps": 2},
    "memscore": {"models": 4},
    "objective": {"mode": "constrained", "delta": 0.05},
    "search": {"defenses": ["rsw", "rmr"]},
    "attacks": {"names": ["conf", "entr", "mentr", "hconf"]},
}
(out / "study.toml").write_text(tomli_w.dumps(study))
print(f"wrote {out / 'table.csv'}, {out / 'victim.pt'}, {out / 'model.py'} and {out / 'study.toml'}")
