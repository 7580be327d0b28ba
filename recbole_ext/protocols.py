"""The two evaluation protocols RecBole lacks, where they meet RecBole's data path.

The cold-start item protocol (:mod:`recbole_ext.cold_start`) and the held-out user protocol
(:mod:`recbole_ext.heldout_users`) each need ``Dataset.build`` and RecBole's full-ranking loader.
Each of those RecBole methods is replaced once, here, by a function that asks which protocol is
on (the two cannot be combined: :func:`~recbole_ext.heldout_users.heldout_user_settings` refuses
it) and otherwise does exactly what RecBole does.
"""
from __future__ import annotations

from recbole_ext.cold_start import _cold_build, candidate_items, cold_item_settings, exclusion_mask, outside_candidates
from recbole_ext.heldout_users import _heldout_build, add_foldin_to_histories, heldout_user_settings


def build(original, name):
    """``Dataset.build``: the held-out user split, the cold-start item split, or RecBole's own."""

    def build(self):
        settings = heldout_user_settings(self.config)
        if settings is not None:
            return _heldout_build(self, settings)
        if cold_item_settings(self.config) is not None:
            return _cold_build(self)
        return original(self)

    return build


def _loader_init(original):
    def __init__(self, config, dataset, sampler, shuffle=False):
        original(self, config, dataset, sampler, shuffle=shuffle)
        #: the only items this loader's users are ranked on (``None``: all); read by lightning_genrec's data forms
        self.candidate_items = candidate_items(dataset, self.is_sequential)
        add_foldin_to_histories(self, dataset)

    return __init__


def _loader_collate(original):
    def collate_fn(self, index):
        interaction, history, positive_u, positive_i = original(self, index)
        candidates = getattr(self, "candidate_items", None)
        if candidates is not None and history is not None:
            # RecBole's Trainer does scores[history] = -inf: a (B, I) bool mask indexes as its (rows, items) pair
            history = exclusion_mask(len(interaction), self._dataset.item_num, candidates, history)
        return interaction, history, positive_u, positive_i

    return collate_fn


def _case_study_scores(original):
    """``recbole.utils.case_study.full_sort_scores`` (and ``full_sort_topk``, which calls it) read the
    loader's history themselves: give them the candidate set too."""

    def full_sort_scores(uid_series, model, test_data, device=None):
        scores = original(uid_series, model, test_data, device)
        candidates = getattr(test_data, "candidate_items", None)
        return scores if candidates is None else outside_candidates(scores, candidates)

    return full_sort_scores


def loader(original, name):
    """RecBole's full-ranking loader (``__init__``, ``collate_fn``) and case study
    (``full_sort_scores``) under a protocol: candidate items and fold-in histories."""
    return {"__init__": _loader_init, "collate_fn": _loader_collate,
            "full_sort_scores": _case_study_scores}[name](original)


__all__ = ["build", "loader"]
