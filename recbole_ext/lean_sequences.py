"""RecBole's next-item protocol for our sequential models without RecBole's augmented copy of the data.

RecBole's ``SequentialDataset`` turns every interaction but a user's first into a row that carries the
user's previous ``MAX_ITEM_LIST_LENGTH`` items, for every field it loaded (item ids, timestamps,
ratings), in a Python loop over the rows: at the ML-20M shape that is 20 M rows x 50 steps x each
field (above 21 GB, and the loop alone takes many minutes) before any model runs.  SVAE never reads
those lists for training (it trains on each user's whole sequence, :mod:`lightning_genrec.sequences`),
and its scoring input is exactly the user's earlier items, which it keeps itself.

With ``sequence_rows: lean`` (the default for our sequential models), the dataset keeps the same rows
RecBole would (every interaction but each user's first, in time order: so RecBole's leave-one-out split
gives the same train / validation / test rows), without the lists; each user's first item is kept
aside (``dataset.sequence_firsts``), and :class:`~lightning_genrec.sequences.SequenceData` rebuilds a
row's input -- the user's earlier items, last ``MAX_ITEM_LIST_LENGTH`` of them -- from the sequences it
holds.  Scores and metrics are those of RecBole's rows (tested against ``sequence_rows: recbole``).
RecBole's own sequential models keep RecBole's augmentation.
"""
from __future__ import annotations

import numpy as np
import torch
from recbole.data.dataset import SequentialDataset

from lightning_genrec.models import MODELS


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
    users = dataset.inter_feat[dataset.uid_field].numpy()
    first = np.r_[True, users[1:] != users[:-1]] if len(users) else np.zeros(0, dtype=bool)
    items = dataset.inter_feat[dataset.iid_field].numpy()
    dataset.sequence_firsts = (users[first].astype(np.int64), items[first].astype(np.int64))
    dataset.inter_feat = dataset.inter_feat[torch.from_numpy(np.flatnonzero(~first))]
    dataset.lean_sequences = True


def apply() -> None:
    """Make ``SequentialDataset`` build lean rows for our sequential models (idempotent)."""
    original = SequentialDataset.data_augmentation
    if getattr(original, "_genrec_lean", False):
        return

    def data_augmentation(self):
        if uses_lean_rows(self.config):
            return _lean_augmentation(self)
        return original(self)

    data_augmentation._genrec_lean = True
    SequentialDataset.data_augmentation = data_augmentation


__all__ = ["apply", "uses_lean_rows"]
