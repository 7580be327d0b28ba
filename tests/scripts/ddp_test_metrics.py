"""Test one checkpoint with N CPU processes (Lightning DDP); rank 0 writes the metrics as JSON.

Usage: python ddp_test_metrics.py CKPT DATA_ROOT DEVICES OUT_JSON [MODEL]   (MODEL: default MVAE)

Why 1 and 2 processes give the same metrics, on any CPU: every user is scored alone (one user a
batch) with one thread in every process, so each user's scores come from the same arithmetic on the
same input whatever the process count -- the same floats, the same top-K lists.  The metric states are
float64 sums and int64 counts, so only the order of the final cross-process sum differs (~1e-16).
With several users a batch, the batch shapes would differ between the runs, float32 scores would
differ in their last bits, and a near-tie at the K-th place could flip: equality would be luck.
"""
import json
import os
import sys

os.environ["OMP_NUM_THREADS"] = "1"   # before torch is imported; Lightning's DDP children inherit it

import pytorch_lightning as pl  # noqa: E402

from lightning_genrec import MODELS
from recbole_ext import RecBoleDataModule

ckpt, root, devices, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
name = sys.argv[5] if len(sys.argv) > 5 else "MVAE"
dm = RecBoleDataModule("odd", model=name, config_dict={"data_path": root, "comet": False, "state": "WARNING", "use_gpu": False,
                                           "topk": [5, 10]}, eval_batch_size=1)
model = MODELS[name].load_from_checkpoint(ckpt)
trainer = pl.Trainer(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto", logger=False,
                     enable_progress_bar=False, enable_model_summary=False)
result = trainer.test(model, datamodule=dm, verbose=False)[0]
if trainer.global_rank == 0:
    with open(out, "w") as f:
        json.dump({"metrics": result, "world_size": trainer.world_size}, f)
