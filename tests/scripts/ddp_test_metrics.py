"""Test one checkpoint with N CPU processes (Lightning DDP); rank 0 writes the metrics as JSON.

Usage: python ddp_test_metrics.py CKPT DATA_ROOT DEVICES OUT_JSON [MODEL]   (MODEL: default MVAE)
"""
import json
import sys

import pytorch_lightning as pl

from lightning_genrec import MODELS, RecBoleDataModule

ckpt, root, devices, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
name = sys.argv[5] if len(sys.argv) > 5 else "MVAE"
dm = RecBoleDataModule("odd", model=name, config_dict={"data_path": root, "comet": False, "state": "WARNING", "use_gpu": False,
                                           "topk": [5, 10]}, eval_batch_size=8)
model = MODELS[name].load_from_checkpoint(ckpt)
trainer = pl.Trainer(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto", logger=False,
                     enable_progress_bar=False, enable_model_summary=False)
result = trainer.test(model, datamodule=dm, verbose=False)[0]
if trainer.global_rank == 0:
    with open(out, "w") as f:
        json.dump({"metrics": result, "world_size": trainer.world_size}, f)
