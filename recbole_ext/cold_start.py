"""The cold-start item protocol: a split that holds out whole items.

RecBole's splits (``eval_args.split``) divide each user's interactions, so
every test item has been seen in training.  With ``cold_item_split: true``,
``Dataset.build`` instead draws ``cold_item_ratio`` of the items (seeded by ``seed``);
*all* their interactions leave training.  The held-out items are divided once
more (``cold_item_valid_ratio``): the interactions of the first part form the
validation split, those of the rest the test split -- so epochs are selected
on other new items than the ones reported.  Training keeps every interaction
of the remaining (warm) items.

Evaluation (RecBole's full-sort loaders, so RecBole's evaluator and our
``TopKMetrics`` alike) ranks, for each user with an interaction on the phase's
held-out items, only those items (``cold_item_rank: cold``): every other item
is added to the user's excluded history.  ``cold_item_rank: all`` ranks every
item except the user's history instead.

Config keys (any general model; off unless ``cold_item_split`` is true): see
:data:`COLD_ITEM_SETTINGS` (the README's table is written from it).

``eval_args.split``, ``order`` and ``group_by`` are not used while the
protocol is on; ``eval_args.mode`` must be ``full`` (only RecBole's full-sort
loader learns the candidate sets).  Sequential, context-aware and knowledge
models are refused: they need RecBole's other datasets and loaders, and a
sequential model has no way to score an unseen item.

The exclusion lists grow as users x non-candidate items: fine for ml-100k-sized
data (about 1.3 M entries a phase), heavy for millions of users.
"""
from __future__ import annotations

import logging

import numpy as np
import torch
from recbole.data.dataloader.general_dataloader import FullSortEvalDataLoader
from recbole.data.dataset import Dataset
from recbole.utils import ModelType

from lightning_genrec.errors import ConfigError
from lightning_genrec.hparams import choice, flag, number, setting

RANK_MODES = ("cold", "all")
#: the protocol's config keys, declared once
COLD_ITEM_SETTINGS = tuple(setting(h) for h in (
    flag("cold_item_split", False, "true: hold out whole items instead of RecBole's eval_args split."),
    number("cold_item_ratio", 0.2, "share of the items held out entirely (seeded by seed).", low_open=True,
           high=1.0, high_open=True),
    number("cold_item_valid_ratio", 0.5, "share of the held-out items whose interactions validate (the rest "
                                         "test).", low_open=True, high=1.0, high_open=True),
    choice("cold_item_rank", "cold", RANK_MODES, "cold: rank only the phase's held-out items; all: every item "
                                                 "but the user's history."),
))


def cold_item_settings(config) -> tuple[float, float, str] | None:
    """``(ratio, valid_ratio, rank)`` when ``cold_item_split`` is on, else ``None``; raises
    :class:`~recbole_ext.config.ConfigError` for an invalid setting (before any data loads
    when called from :func:`recbole_ext.config.make_config`)."""
    switch, ratio, valid, rank = (h.default if config[h.name] is None else h.check(config[h.name])
                                  for h in COLD_ITEM_SETTINGS)
    if not switch:
        return None
    model_type = config["MODEL_TYPE"]
    if model_type not in (ModelType.GENERAL, ModelType.TRADITIONAL):
        raise ConfigError(f"the cold-start item protocol (cold_item_split) is for general models; {config['model']} "
                          f"is a {model_type.name.lower()} model. Remove cold_item_split, or use a general model.")
    modes = (config["eval_args"] or {}).get("mode") or {}
    modes = modes if isinstance(modes, dict) else {"valid": modes, "test": modes}
    if any(m != "full" for m in modes.values()):
        raise ConfigError(f"the cold-start item protocol ranks the held-out items in full, but eval_args.mode is "
                          f"{modes}; set eval_args: {{mode: full}}.")
    if config["benchmark_filename"]:
        raise ConfigError("cold_item_split and benchmark_filename both define the split; use one of them.")
    if config["save_dataloaders"]:
        raise ConfigError("cold_item_split with save_dataloaders: RecBole would reuse saved loaders without "
                          "checking the cold-start settings; set save_dataloaders: false.")
    return ratio, valid, rank


def draw_cold_items(item_ids: np.ndarray, ratio: float, valid_ratio: float, seed: int):
    """``(valid_items, test_items)``: disjoint, sorted, drawn from ``item_ids`` with ``seed``.
    Raises :class:`ConfigError` if either part would be empty."""
    item_ids = np.unique(np.asarray(item_ids, dtype=np.int64))
    rng = np.random.default_rng(seed)
    n_cold = int(round(ratio * len(item_ids)))
    n_valid = int(round(valid_ratio * n_cold))
    if n_valid < 1 or n_cold - n_valid < 1:
        raise ConfigError(f"cold_item_ratio={ratio} and cold_item_valid_ratio={valid_ratio} of {len(item_ids)} items "
                          f"leave {n_valid} validation and {n_cold - n_valid} test items; both need at least one. "
                          "Raise cold_item_ratio, or use a dataset with more items.")
    cold = rng.permutation(item_ids)[:n_cold]
    return np.sort(cold[:n_valid]), np.sort(cold[n_valid:])


def _cold_build(self):
    settings = cold_item_settings(self.config)
    self._change_feat_format()
    ratio, valid_ratio, rank = settings
    items = self.inter_feat[self.iid_field].numpy()
    valid_items, test_items = draw_cold_items(items, ratio, valid_ratio, self.config["seed"])
    in_valid = torch.from_numpy(np.isin(items, valid_items))
    in_test = torch.from_numpy(np.isin(items, test_items))
    train_rows = torch.nonzero(~(in_valid | in_test)).view(-1)
    parts = [self.copy(self.inter_feat[rows]) for rows in
             (train_rows, torch.nonzero(in_valid).view(-1), torch.nonzero(in_test).view(-1))]
    for part, phase_items in zip(parts, (None, valid_items, test_items)):
        part.cold_items = {"valid": valid_items, "test": test_items}
        part.rank_items = phase_items if (phase_items is not None and rank == "cold") else None
    logging.getLogger().info(
        f"cold-start item split: {len(valid_items)} validation and {len(test_items)} test items held out "
        f"({len(train_rows)} training, {int(in_valid.sum())} validation, {int(in_test.sum())} test interactions); "
        f"ranking {'only the held-out items' if rank == 'cold' else 'all items'}")
    return parts


_RECBOLE_BUILD = None   # RecBole's own Dataset.build, which warm protocols keep using


def _patch_dataset() -> None:
    global _RECBOLE_BUILD
    original = Dataset.build
    if getattr(original, "_genrec_cold", False):
        return
    _RECBOLE_BUILD = original

    def build(self):
        if cold_item_settings(self.config) is None:
            return original(self)
        return _cold_build(self)

    build._genrec_cold = True
    Dataset.build = build


def restrict_to(loader, rank_items: np.ndarray) -> None:
    """Add every item outside ``rank_items`` to each user's excluded history in ``loader``."""
    others = np.setdiff1d(np.arange(1, loader._dataset.item_num), rank_items)
    others_t = torch.from_numpy(others)
    for uid in np.asarray(loader.uid_list, dtype=np.int64):
        history = loader.uid2history_item[uid]
        loader.uid2history_item[uid] = torch.unique(torch.cat([history, others_t]))


def _patch_loader() -> None:
    original = FullSortEvalDataLoader.__init__
    if getattr(original, "_genrec_cold", False):
        return

    def __init__(self, config, dataset, sampler, shuffle=False):
        original(self, config, dataset, sampler, shuffle=shuffle)
        rank_items = getattr(dataset, "rank_items", None)
        if rank_items is not None and not self.is_sequential:
            restrict_to(self, rank_items)

    __init__._genrec_cold = True
    FullSortEvalDataLoader.__init__ = __init__


def apply() -> None:
    """Teach RecBole's ``Dataset.build`` and full-sort loader the cold-start item protocol."""
    _patch_dataset()
    _patch_loader()
