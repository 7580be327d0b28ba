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
held-out items, only those items (``cold_item_rank: cold``).  The phase's
held-out items are its candidate set, applied at scoring time: the loader keeps
each user's real history (``uid2history_item``) and carries the candidates as
``candidate_items``; each batch it yields excludes, as a (users, items) mask,
the history and every other item (RecBole's ``Trainer`` sets those scores to
``-inf``; so does ``recbole.utils.case_study.full_sort_scores``), and our data
forms read the same candidates into their evaluation rows.
``cold_item_rank: all`` ranks every item except the user's history instead.

Config keys (any general model; off unless ``cold_item_split`` is true): see
:data:`COLD_ITEM_SETTINGS` (docs/protocols.md's table is written from it).

``eval_args.split``, ``order`` and ``group_by`` are not used while the
protocol is on; ``eval_args.mode`` must be ``full`` (only RecBole's full-sort
loader learns the candidate sets).  Sequential, context-aware and knowledge
models are refused: they need RecBole's other datasets and loaders, and a
sequential model has no way to score an unseen item.

Memory: the candidate set is one list of items a phase, and each user's history
holds only their interactions.  What is dense is one evaluation batch, never the
phase: its users x items scores (RecBole's ``eval_batch_size`` cells; our general models score a block
of such batches, about :data:`~lightning_genrec.data.SCORE_BLOCK` cells, at a time) and their
exclusion mask (one byte a cell; RecBole's ``scores[mask] = -inf`` indexes the
masked cells of that batch, 16 bytes each, while it runs).
"""
from __future__ import annotations

import logging

import numpy as np
import torch
from recbole.utils import FeatureType, ModelType

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
    require_full_ranking(config, "the cold-start item protocol ranks the held-out items in full")
    if config["benchmark_filename"]:
        raise ConfigError("cold_item_split and benchmark_filename both define the split; use one of them.")
    if config["save_dataloaders"]:
        raise ConfigError("cold_item_split with save_dataloaders: RecBole would reuse saved loaders without "
                          "checking the cold-start settings; set save_dataloaders: false.")
    return ratio, valid, rank


def require_full_ranking(config, why: str) -> None:
    """:class:`ConfigError` unless every phase of ``eval_args.mode`` is ``full`` (``why``: the protocol's reason)."""
    modes = (config["eval_args"] or {}).get("mode") or {}
    modes = modes if isinstance(modes, dict) else {"valid": modes, "test": modes}
    if any(m != "full" for m in modes.values()):
        raise ConfigError(f"{why}, but eval_args.mode is {modes}; set eval_args: {{mode: full}}.")


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


def record_filled_floats(original, name):
    """RecBole fills a missing float value with the mean over every row of its file -- under this protocol the
    held-out items too, so their values would reach the training items' content.  Record which items' float
    fields RecBole filled (``dataset.filled_item_floats``: field -> item ids); item content
    (:func:`lightning_genrec.content.item_content`) refills them from the items it is fitted on."""
    def _fill_nan(self):
        feat, filled = self.item_feat, {}
        if feat is not None:
            for field in feat:
                missing = feat[field].isna().to_numpy() if self.field2type[field] == FeatureType.FLOAT else None
                if missing is not None and missing.any():
                    filled[field] = feat[self.iid_field].to_numpy()[missing].astype(np.int64)
        self.filled_item_floats = filled
        original(self)

    return _fill_nan


def exclusion_mask(n_users: int, n_items: int, candidates: np.ndarray, history: tuple) -> torch.Tensor:
    """(B, I) bool: every item outside ``candidates``, and each row's ``history`` (RecBole's
    ``(rows, items)`` index pair of the users' excluded history)."""
    mask = torch.ones(n_items, dtype=torch.bool)
    mask[torch.as_tensor(candidates, dtype=torch.long)] = False
    mask = mask.expand(n_users, n_items).clone()
    mask[history] = True
    return mask


def candidate_items(dataset, is_sequential: bool):
    """The only items a full-ranking loader over ``dataset`` ranks (``None``: all)."""
    rank_items = getattr(dataset, "rank_items", None)
    return None if rank_items is None or is_sequential else np.asarray(rank_items)


def outside_candidates(scores: torch.Tensor, candidates) -> torch.Tensor:
    """``scores`` (B, I) with every item outside ``candidates`` at -inf (in place)."""
    outside = torch.ones(scores.shape[1], dtype=torch.bool)
    outside[torch.as_tensor(candidates, dtype=torch.long)] = False
    scores[:, outside.to(scores.device)] = -np.inf
    return scores
