"""Train MVAE with N CPU processes (Lightning DDP) under a scripted validation curve that peaks at the
first epoch, Lightning's EarlyStopping and a monitoring ModelCheckpoint, so that ``anneal_restarts``
goes back to the best file; every rank saves its weights, step size, restarts and epochs to
OUT_PREFIX.rank<r>.pt.  With ``after_cap``: a curve that peaks as beta reaches its cap, and
``restart_after_cap`` (two restarts where early stopping asks after the cap); ``after_cap_local``: the
same, but early stopping watches a metric that is not synchronised and plateaus on rank 0 only.

Usage: python ddp_restarts.py DATA_ROOT DEVICES OUT_PREFIX CHECKPOINT_DIR [after_cap | after_cap_local]
"""
import os
import sys

os.environ["OMP_NUM_THREADS"] = "1"   # before torch is imported; Lightning's DDP children inherit it

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint  # noqa: E402

from lightning_genrec import MVAE  # noqa: E402
from recbole_ext import RecBoleDataModule  # noqa: E402

root, devices, prefix, ckpts = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
mode = sys.argv[5] if len(sys.argv) > 5 else ""
after_cap = mode.startswith("after_cap")
if after_cap:       # best as beta reaches its cap (epoch 4), then a plateau
    CURVE = [0.1, 0.2, 0.3, 0.9] + [0.5] * 100
    settings = {"anneal_epochs": 4.0, "anneal_restarts": 2, "restart_after_cap": True}
else:               # best at the first validation, never better
    CURVE = [0.9] + [0.5] * 100
    settings = {"anneal_epochs": 40.0, "anneal_patience": 2, "anneal_restarts": 1}


class Inject(pl.Callback):
    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            epoch = trainer.current_epoch
            trainer.callback_metrics["scripted"] = torch.tensor(CURVE[epoch])
            # like a metric logged without sync_dist: the curve on rank 0, still rising on the others
            trainer.callback_metrics["local"] = torch.tensor(CURVE[epoch] if trainer.global_rank == 0 else epoch)


dm = RecBoleDataModule("odd", config_dict={"data_path": root, "comet": False, "state": "WARNING", "use_gpu": False,
                                           "topk": [5, 10]}, train_batch_size=16)
model = MVAE(anneal_cap=0.2, mlp_hidden_size=[16], latent_dimension=4, topk=[5, 10], **settings)
stopping = EarlyStopping("local" if mode == "after_cap_local" else "scripted", patience=2 if after_cap else 1, mode="max")
trainer = pl.Trainer(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto", max_epochs=30,
                     logger=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                     callbacks=[Inject(), stopping,
                                ModelCheckpoint(dirpath=ckpts, monitor="scripted", mode="max", save_top_k=1)])
trainer.fit(model, datamodule=dm)
torch.save({"state": model.state_dict(), "lr": trainer.optimizers[0].param_groups[0]["lr"],
            "restarts": model._restarts, "epochs": trainer.current_epoch, "world_size": trainer.world_size},
           f"{prefix}.rank{trainer.global_rank}.pt")
