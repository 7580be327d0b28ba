"""Extra results of the SVAE studies (``studies/ml100k_svae_*.yaml``), run by ``harness.py``.

``excluded_metrics``: next-item protocol, the same trained model re-scored with each user's seen items
excluded (``x:`` columns), for every row alike (RecBole's sequential rule excludes nothing).
``speed_cell``: one SVAE training epoch on the next-item data at the row's ``train_batch_size``
(``studies/ml100k_svae_speed.yaml``: the default against batch size 1); seconds and peak RSS.
"""
from __future__ import annotations

import os
import time

HERE = os.path.dirname(os.path.abspath(__file__))
NEXT_ITEM = os.path.join(os.path.dirname(HERE), "configs", "protocols", "ml100k_next_item.yaml")


def _exclusion_wrapper(net, data):
    """``full_sort_predict`` with each row's user history (training sequence + the row's
    item list) at -inf: the same exclusion for every model."""
    original = net.full_sort_predict
    uid_field = net.USER_ID

    def full_sort_predict(interaction):
        scores = original(interaction).view(len(interaction), -1)
        exclude = data.recbole_batch(interaction, uid_field)["exclude"].to(scores.device)
        return scores.masked_fill(exclude, float("-inf")).reshape(-1)

    return full_sort_predict


def excluded_metrics(trainer, net, train, test) -> dict:
    """Next-item: the same trained model re-scored with each user's seen items excluded."""
    from lightning_genrec.sequences import SequenceData
    from recbole_ext.model_settings import data_options

    data = SequenceData.from_train_dataset(train._dataset, **data_options(SequenceData, trainer.config))
    data.exclude_history = True
    original = net.full_sort_predict
    net.full_sort_predict = _exclusion_wrapper(net, data)
    try:
        again = trainer.evaluate(test, load_best_model=False, show_progress=False)
    finally:
        net.full_sort_predict = original
    return {f"x:{k}": float(v) for k, v in again.items()}


def speed_cell(row: str, config, primary: str) -> dict:
    """One SVAE training epoch (no validation) on the next-item data at ``config['train_batch_size']``."""
    import resource

    import pytorch_lightning as pl

    from lightning_genrec import SVAE
    from recbole_ext import RecBoleDataModule

    seed, batch_size = config["seed"], config["train_batch_size"]
    dm = RecBoleDataModule(config["dataset"], model="SVAE", config_file_list=[NEXT_ITEM],
                           config_dict={"seed": seed, "state": "WARNING"}, train_batch_size=batch_size)
    dm.setup()
    pl.seed_everything(seed, verbose=False)
    model = SVAE()
    seconds = []

    class Clock(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            self.t = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module):
            seconds.append(time.perf_counter() - self.t)

    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, callbacks=[Clock()])
    trainer.fit(model, dm)
    return {"train_batch_size": dm.train_batch_size, "windows": len(dm.data.train_examples()),
            "epoch_s": seconds[0], "fit_s": seconds[0], "epochs": 1,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
