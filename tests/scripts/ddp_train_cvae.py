"""Train CVAE with N CPU processes (Lightning DDP), each process seeded differently on purpose;
every rank saves its VAE weights and item factors to OUT_PREFIX.rank<r>.pt.

Usage: python ddp_train_cvae.py DATA_ROOT DEVICES OUT_PREFIX

Both ranks must end with bitwise-identical weights and item factors, for a reason that holds on any CPU:
rank 0's pre-trained VAE is broadcast, DDP applies the same all-reduced gradients everywhere, and each
ALS sweep is the same computation on the same inputs with one thread in every process.
"""
import os
import sys

os.environ["OMP_NUM_THREADS"] = "1"   # before torch is imported; Lightning's DDP children inherit it

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402

from lightning_genrec import CVAE  # noqa: E402
from recbole_ext import RecBoleDataModule  # noqa: E402

root, devices, prefix = sys.argv[1], int(sys.argv[2]), sys.argv[3]
dm = RecBoleDataModule("odd", model="CVAE", config_dict={
    "data_path": root, "comet": False, "state": "WARNING", "use_gpu": False, "topk": [5, 10],
    "content_fields": ["class"], "content_min_count": 1, "cold_item_split": True, "cold_item_ratio": 0.3}, train_batch_size=8)
model = CVAE(mlp_hidden_size=[16, 8], latent_dimension=4, pretrain_epochs=2, topk=[5, 10])


class _SeedPerRank(pl.Callback):
    def setup(self, trainer, pl_module, stage):
        torch.manual_seed(1000 + trainer.global_rank)   # different pre-training draws on every rank


trainer = pl.Trainer(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto", max_epochs=2,
                     logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                     callbacks=[_SeedPerRank()])
trainer.fit(model, datamodule=dm)
torch.save({"net": model.net.state_dict(), "item_factors": model.item_factors, "world_size": trainer.world_size},
           f"{prefix}.rank{trainer.global_rank}.pt")
