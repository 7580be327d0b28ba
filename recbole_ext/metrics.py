"""RecBole metric classes added by lightning-genrec.

``Novelty`` joins RecBole's metric registry (config name ``Novelty``, result key
``novelty@K``), and so does ``TruncatedRecall`` (``truncatedrecall@K``: the
recall of Liang et al. 2018, hits / min(K, |T_u|)).  RecBole's own ``ItemCoverage`` and ``GiniIndex`` work once
``recbole_ext.compat`` has fixed the collector.  Definitions: see
``lightning_genrec/metrics.py`` (the Lightning side computes the same numbers).
"""
from __future__ import annotations

import numpy as np
from recbole.evaluator.base_metric import AbstractMetric, TopkMetric
from recbole.utils import EvaluatorType


class Novelty(AbstractMetric):
    r"""Mean self-information of the recommended items.

    .. math:: \mathrm{Novelty@K} = \frac{1}{|U|}\sum_u \frac{1}{K}\sum_{i \in L_u} -\log_2 \frac{\max(n_i, 1)}{|U_{train}|}

    with :math:`n_i` the item's training interactions and :math:`|U_{train}|` the
    users with training interactions. Higher means less popular recommendations.
    """

    metric_type = EvaluatorType.RANKING
    metric_need = ["rec.items", "data.count_items", "data.count_users"]
    smaller = False

    def __init__(self, config):
        super().__init__(config)
        self.topk = config["topk"]

    def calculate_metric(self, dataobject):
        item_matrix = dataobject.get("rec.items").numpy()              # (U, Kmax)
        count_items = dataobject.get("data.count_items")                # Counter: item -> n
        n_users = len(dataobject.get("data.count_users"))
        size = max(int(item_matrix.max()) + 1, max(count_items, default=0) + 1)
        counts = np.zeros(size, dtype=np.float64)
        for item, n in count_items.items():
            counts[int(item)] = n
        info = -np.log2(np.maximum(counts, 1.0) / n_users)
        per_rank = info[item_matrix]                                    # (U, Kmax)
        return {f"novelty@{k}": round(float(per_rank[:, :k].mean()), self.decimal_place) for k in self.topk}


class TruncatedRecall(TopkMetric):
    r"""Recall with the denominator truncated at K (Liang et al. 2018, the Mult-VAE paper).

    .. math:: \mathrm{TruncatedRecall@K} = \frac{1}{|U|}\sum_u \frac{|L_u \cap T_u|}{\min(K, |T_u|)}

    Unlike RecBole's ``Recall`` (hits / |T_u|) it reaches 1 whenever the top K are all positives,
    so a user with more than K held-out items is not capped below 1.
    """

    smaller = False

    def calculate_metric(self, dataobject):
        pos_index, pos_len = self.used_info(dataobject)             # (U, Kmax) bool, (U,)
        return self.topk_result("truncatedrecall", self.metric_info(pos_index, pos_len))

    def metric_info(self, pos_index, pos_len):
        ks = np.arange(1, pos_index.shape[1] + 1)
        return np.cumsum(pos_index, axis=1) / np.minimum(ks[None, :], pos_len.reshape(-1, 1))


_REGISTERED = {"novelty": Novelty, "truncatedrecall": TruncatedRecall}


def registered(original, name):
    """An entry of RecBole's evaluator registry (``metrics_dict[novelty]``, ...) for our metrics."""
    table, _, key = name[:-1].partition("[")
    cls = _REGISTERED[key]
    return {"metrics_dict": cls, "metric_information": cls.metric_need, "metric_types": cls.metric_type}[table]
