"""RecBole's next-item protocol for our sequential models without RecBole's augmented copy of the data.

RecBole's ``SequentialDataset`` turns every interaction but a user's first into a row that carries the
user's previous ``MAX_ITEM_LIST_LENGTH`` items, for every field it loaded (item ids, timestamps,
ratings), in a Python loop over the rows: at the ML-20M shape that is 20 M rows x 50 steps x each
field (above 21 GB, and the loop alone takes many minutes) before any model runs.  SVAE never reads
those lists for training (it trains on each user's whole sequence, :mod:`lightning_genrec.sequences`),
and its scoring input is exactly the user's earlier items, which it keeps itself.

With ``sequence_rows: lean`` (the default for our sequential models), the dataset keeps the same rows
RecBole would (every interaction but each user's first, in time order: so RecBole's leave-one-out split
gives the same train / validation / test rows), without the lists.  Instead each row carries its place
in its user's time-ordered sequence (the float field ``genrec_position``), and the dataset keeps every
user's whole sequence once (``dataset.sequence_all``: ``(ptr, items)``, one item id per interaction);
:class:`~lightning_genrec.sequences.SequenceData` reads a row's input -- the user's earlier items, the
last ``MAX_ITEM_LIST_LENGTH`` of them -- from there, whichever split or loader the row comes from.  Scores and metrics are those of RecBole's rows (tested against ``sequence_rows: recbole``).
RecBole's own sequential models keep RecBole's augmentation.

RecBole's full-sort loader also reads ``eval_batch_size`` as *rows* per batch for sequential models
(scores per batch for the others): with the protocols' 409600, a next-item test of 138 k users is one
batch of 138 k x 26 k dense scores (15 GB at the ML-20M shape).  For our sequential models the loader
takes ``eval_batch_size`` as scores per batch, as for general models and as our own Lightning loop does.
"""
from __future__ import annotations

import numpy as np
import torch
from recbole.data.interaction import Interaction
from recbole.utils import FeatureSource, FeatureType

from lightning_genrec.models import MODELS
from lightning_genrec.sequences import POSITION_FIELD


def uses_lean_rows(config) -> bool:
    """Whether ``config``'s model is one of ours that reads lean sequence rows."""
    cls = MODELS.get(config["model"])
    if cls is None or not getattr(cls, "sequential", False):
        return False
    value = config["sequence_rows"] if "sequence_rows" in config else None
    return (value or "lean") == "lean"


def _lean_augmentation(dataset) -> None:
    dataset._check_field("uid_field", "time_field")
    dataset.sort(by=[dataset.uid_field, dataset.time_field], ascending=True)
    users = dataset.inter_feat[dataset.uid_field].numpy().astype(np.int64)
    items = dataset.inter_feat[dataset.iid_field].numpy().astype(np.int64)
    ptr = np.searchsorted(users, np.arange(dataset.user_num + 1))           # users are sorted
    position = np.arange(len(users)) - ptr[users]                           # place in the user's sequence
    dataset.sequence_all = (ptr, items)
    dataset.set_field_property(POSITION_FIELD, FeatureType.FLOAT, FeatureSource.INTERACTION, 1)
    dataset.inter_feat.update(Interaction({POSITION_FIELD: torch.from_numpy(position.astype(np.float64))}))
    dataset.inter_feat = dataset.inter_feat[torch.from_numpy(np.flatnonzero(position > 0))]
    dataset.lean_sequences = True


def _lean_data_augmentation(original):
    def data_augmentation(self):
        if uses_lean_rows(self.config):
            return _lean_augmentation(self)
        return original(self)

    return data_augmentation


def _rows_per_eval_batch(original):
    def _init_batch_size_and_step(self):
        cls = MODELS.get(self.config["model"])
        if not (self.is_sequential and cls is not None and getattr(cls, "sequential", False)):
            return original(self)
        rows = max(self.config["eval_batch_size"] // self._dataset.item_num, 1)   # scores per batch
        self.step = rows
        self.set_batch_size(rows)

    return _init_batch_size_and_step


def lean(original, name):
    """``SequentialDataset.data_augmentation`` builds lean rows for our sequential models, and the
    full-sort loader counts their ``eval_batch_size`` in scores (as for general models)."""
    return {"data_augmentation": _lean_data_augmentation,
            "_init_batch_size_and_step": _rows_per_eval_batch}[name](original)


__all__ = ["lean", "uses_lean_rows"]
