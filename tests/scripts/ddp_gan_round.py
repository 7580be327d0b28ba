"""Train a GAN for one round with N CPU processes (Lightning DDP); rank 0 saves the weights and the
round's logged losses to OUT.

Usage: python ddp_gan_round.py MODEL DATA_ROOT DEVICES OUT [CFGAN_MODE]

Every process draws the same minibatches (rank 0's round seed is broadcast), takes its share of each
and the gradients are summed over the processes (``RoundGAN.step``): after one round the weights must
match a one-process run with the same total batch, up to float rounding.
"""
import json
import os
import sys

os.environ["OMP_NUM_THREADS"] = "1"   # before torch is imported; Lightning's DDP children inherit it

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402

from lightning_genrec import MODELS  # noqa: E402
from recbole_ext import RecBoleDataModule  # noqa: E402

name, root, devices, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
mode = sys.argv[5] if len(sys.argv) > 5 else "user"
settings = {"CFGAN": dict(g_hidden_size=32, d_hidden_size=16, g_batch_size=8, d_batch_size=16, mode=mode,
                          g_learning_rate=1e-3, d_learning_rate=1e-3),
            "LARA": dict(batch_size=64, hidden_size=16, g_learning_rate=1e-3, d_learning_rate=1e-3)}[name]
extra = {"LARA": {"cold_item_ratio": 0.4, "valid_metric": "item_ndcg@10"}}.get(name, {})
dm = RecBoleDataModule("odd", model=name, config_dict={
    "data_path": root, "comet": False, "state": "WARNING", "use_gpu": False, "topk": [5, 10], **extra})
dm.setup()                          # RecBole seeds torch here (its `seed`): set ours after it
pl.seed_everything(3)               # what DDP's processes are seeded with as they start
model = MODELS[name](topk=[5, 10], **settings)
model.attach_data(dm.data)          # built now, so the initial weights can be saved
initial = {k: v.detach().clone() for k, v in model.state_dict().items()}


class _Losses(pl.Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        self.logged = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")}


losses = _Losses()
trainer = pl.Trainer(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto", max_epochs=1,
                     limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_progress_bar=False,
                     enable_model_summary=False, enable_checkpointing=False, callbacks=[losses])
trainer.fit(model, datamodule=dm)
if trainer.global_rank == 0:
    torch.save({"state": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "initial": initial, "losses": losses.logged,
                "world_size": trainer.world_size}, out)
