"""Your own PyTorch loop with a study's best defense setting: prune, ship, audit.  Usage: train.py FOLDER [LABEL]
FOLDER: what examples/own_model/train_outside.py wrote (table.csv, victim.pt, model.py) and best.toml (wemem export)."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import torch

from search import load_setting
from wemem import loop
from wemem.artifact import ArtifactMeta, export_onnx, fold_masks, measured_sparsity, save_safetensors
from wemem.data.custom import encode_table, fit_encoding

folder, label = Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "species"
sys.path.insert(0, str(folder))
from model import Net  # noqa: E402  (your model: here the one the study ran, beside its victim.pt)

run = load_setting(folder / "best.toml")  # the setting, and the pruning and training the study used
frame = pd.read_csv(folder / "table.csv")
x, y = map(torch.as_tensor, encode_table(frame, fit_encoding(frame, label, exclude=("train",))))
member = torch.as_tensor(frame["train"].to_numpy())  # the rows the model trains on; the others are held out
x_in, y_in, x_out, y_out = x[member], y[member], x[~member], y[~member]
shape, classes, t = tuple(x.shape[1:]), int(y.max()) + 1, run.training
scores = loop.memscores(lambda: Net(shape, classes), x_in, y_in, x_out, y_out, t, run.memscore_models, run.seed)

model = Net(shape, classes)
model.load_state_dict(torch.load(folder / "victim.pt", weights_only=True))
optimizer = torch.optim.Adam(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)  # coupled L2, as the study
generator = torch.Generator().manual_seed(run.seed)
window = loop.SlidingWindowSampler(y_in, scores, run.windows, generator) if run.windows else None  # rsw, swmr
criterion = loop.RiskMemoryLoss(scores, run.risk, t.weight_decay)  # cross-entropy, + RMR's term (rmr, swmr)
rows = window if window is not None else torch.arange(len(y_in))
batches = loop.EpochBatchSampler(rows, t.batch_size, generator, scores, criterion.tau)  # risky first (rmr, swmr)
for sparsity in run.rounds():  # each round: grow the masks, then fine-tune with early stopping on held-out accuracy
    loop.prune_to_sparsity(model, sparsity)
    best, best_epoch = -1.0, 0
    for epoch in range(t.finetune_epochs):
        batches.set_epoch(epoch)
        if epoch - 1 - best_epoch > t.patience or not len(batches.epoch_rows()):
            break
        for batch in map(torch.as_tensor, batches):
            logits = model.train()(x_in[batch])
            loss = criterion(logits, y_in[batch], batch, model)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if (accuracy := float((model.eval()(x_out).argmax(1) == y_out).float().mean())) > best:  # held-out accuracy
            best, best_epoch, kept = accuracy, epoch, {k: v.clone() for k, v in model.state_dict().items()}
model.load_state_dict(kept)  # the last round's best checkpoint ships, as in the engine

masks = loop.fold_pruning(model)  # prune.remove: plain weights, the pruned ones exactly zero
state, shipped = fold_masks(model.state_dict(), masks), folder / "shipped"
sparsity = measured_sparsity(state, masks)
meta = ArtifactMeta(run.model, run.dataset, shape, classes, sparsity, run.setting, run.study, run.trial)
shipped.mkdir(exist_ok=True)
save_safetensors(shipped / "model.safetensors", state, meta)
export_onnx(model.eval(), shape, shipped / "model.onnx", meta)
subprocess.run(["wemem", "audit", str(shipped / "model.onnx"), "--study", run.study], check=True)
