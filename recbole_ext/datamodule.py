"""``RecBoleDataModule``: where RecBole meets Lightning.

RecBole's config, dataset and split (``recbole_ext.config.make_config`` /
``load_data``) become the model's data form (``data_class`` of the model,
built with the settings :func:`recbole_ext.model_settings.data_options` reads from the
config) and Lightning loaders over it.  Importing this module (or
``recbole_ext``) applies the RecBole compatibility fixes.
"""
from __future__ import annotations

import pytorch_lightning as pl
from recbole.utils import get_model

from lightning_genrec.data import InteractionData, eval_loader, train_loader, users_per_eval_batch
from recbole_ext.config import load_data, make_config, require_users
from recbole_ext.model_settings import data_from_recbole, is_genrec_model


class RecBoleDataModule(pl.LightningDataModule):
    """RecBole config, dataset and split, served as Lightning loaders.

    Args:
        dataset: RecBole dataset name. ``'ml-100k'`` needs no ``data_path``: the
            copy inside the recbole wheel is used. Nothing is ever downloaded.
        model: name of the model the data is for (its YAML defaults take part in
            the config, as in RecBole). Default ``'MVAE'``.
        config_dict, config_file_list: RecBole configuration, as for ``run_recbole``
            (e.g. ``{'eval_args': {...}, 'topk': [10, 20], 'seed': 2020}``).
        train_batch_size, eval_batch_size: users per batch; default: the config's
            ``train_batch_size`` (users) and ``eval_batch_size`` read as RecBole's full-ranking
            loader reads it (scores per batch, ``eval_batch_size // n_items`` users, in whole blocks of
            about :data:`~lightning_genrec.data.SCORE_BLOCK` scores for general models; rows, one per user,
            for RecBole's own sequential models), so both entry points batch alike.  Under DDP the
            training batch is Lightning's: each process's (RecBole's door shares one global batch).
        num_workers: ``DataLoader`` workers.

    After ``setup()``: ``config`` (RecBole ``Config``), ``data`` (the model's
    ``data_class``: :class:`~lightning_genrec.data.SparseRowData` for MVAE (input rows as
    :class:`~lightning_genrec.data.NonZeros`; other models read them with ``data.dense``),
    :class:`~lightning_genrec.sequences.SequenceData` for SVAE), ``n_items``.
    """

    def __init__(self, dataset: str = "ml-100k", model: str = "MVAE", config_dict: dict | None = None,
                 config_file_list: list[str] | None = None, train_batch_size: int | None = None,
                 eval_batch_size: int | None = None, num_workers: int = 0):
        super().__init__()
        self.dataset_name, self.model_name = dataset, model
        self.config_dict, self.config_file_list = dict(config_dict or {}), config_file_list
        self._train_batch_size, self._eval_batch_size = train_batch_size, eval_batch_size
        self.num_workers = num_workers
        self.config = None
        self.data: InteractionData | None = None
        self._rows_per_eval_batch = False
        self._score_blocks = True

    def setup(self, stage: str | None = None) -> None:
        if self.data is not None:
            return
        self.config = make_config(self.model_name, self.dataset_name, self.config_file_list, self.config_dict,
                                  for_datamodule=True)
        _, train, valid, test = load_data(self.config)
        require_users(valid, "valid", self.config)
        require_users(test, "test", self.config)
        self.data = data_from_recbole(self.model_name, train, valid, test, self.config)
        # RecBole's full-sort loader counts eval_batch_size in scores, but in rows (one per user) for
        # sequential models other than ours (recbole_ext.lean_sequences); we batch as it does, so both
        # entry points score the same users together and compute the same floats
        sequential = bool(getattr(valid if valid is not None else test, "is_sequential", False))
        model = get_model(self.model_name)
        self._rows_per_eval_batch = sequential and not is_genrec_model(model)
        # general models: RecBole's door scores blocks of batches; not SVAE, even where its config makes
        # RecBole's loaders general ones (block-form splits): its adapter stays a sequential model
        ours_sequential = getattr(getattr(model, "lightning_class", None), "sequential", False)
        self._score_blocks = not (sequential or ours_sequential)

    @property
    def n_items(self) -> int:
        self.setup()
        return self.data.n_items

    @property
    def train_batch_size(self) -> int:
        return self._train_batch_size or self.config["train_batch_size"]

    @property
    def eval_batch_size(self) -> int:
        if self._eval_batch_size:
            return self._eval_batch_size
        self.setup()
        if self._rows_per_eval_batch:
            return self.config["eval_batch_size"]
        return users_per_eval_batch(self.config["eval_batch_size"], self.n_items, self._score_blocks)

    def _shards(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 1, 0
        return trainer.world_size, trainer.global_rank

    def _pin(self) -> bool:
        """Page-locked batches when the trainer's device is a GPU (copied without stalling it)."""
        trainer = getattr(self, "trainer", None)
        return trainer is not None and trainer.strategy.root_device.type == "cuda"

    def train_dataloader(self):
        return train_loader(self.data, self.train_batch_size, num_workers=self.num_workers, pin_memory=self._pin())

    def val_dataloader(self):
        return eval_loader(self.data, "valid", self.eval_batch_size, self.num_workers, *self._shards(),
                           pin_memory=self._pin())

    def test_dataloader(self):
        return eval_loader(self.data, "test", self.eval_batch_size, self.num_workers, *self._shards(),
                           pin_memory=self._pin())


__all__ = ["RecBoleDataModule"]
