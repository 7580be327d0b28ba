"""Full-ranking top-K metrics as one vectorized torchmetrics ``Metric``.

Input per batch: a ``(B, I)`` score matrix in which items that must not be
ranked (training history, RecBole's padding id 0) are already ``-inf``, and a
``(B, I)`` boolean matrix of held-out positives.  Users without positives are
skipped, as RecBole's full-sort loader never yields them.

Every state is a sum or a histogram (float64 sums, an int64 exposure count per
K and item), so the DDP reduction is an exact sum and shards of unequal size
bias nothing.  The definitions are RecBole 1.2.1's (``tests/test_metrics.py``
checks equality with its evaluator on the same rankings):

* Recall@K = hits / |T_u|;  TruncatedRecall@K = hits / min(K, |T_u|) (Liang et al. 2018);  Precision@K = hits / K;  NDCG@K binary, log2 discount,
  ideal DCG over min(|T_u|, K) hits;  MRR@K = 1 / rank of the first hit (0 if none).
* Novelty@K = mean over users of the mean self-information -log2(p_i) of the
  K recommended items, p_i = n_i / |U_train| with n_i the item's training
  interactions (distinct users when interactions are not duplicated) and
  |U_train| the users with training interactions; an item never seen in
  training counts as n_i = 1.
* ItemCoverage@K = |union of the top-K lists| / I;  GiniIndex@K = Gini index of
  the item exposure counts over all top-K lists.  As in RecBole, I is the
  dataset's ``item_num``, which counts the padding id 0.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torchmetrics import Metric

RANKING_METRICS = ("ndcg", "recall", "truncatedrecall", "precision", "mrr", "novelty")
ALL_METRICS = RANKING_METRICS + ("itemcoverage", "giniindex")


def self_information(item_counts: torch.Tensor, n_train_users: int) -> torch.Tensor:
    """``-log2(p_i)`` with ``p_i = max(n_i, 1) / n_train_users``; float64 ``(I,)``."""
    counts = item_counts.to(torch.float64).clamp(min=1.0)
    return -torch.log2(counts / float(n_train_users))


class TopKMetrics(Metric):
    """NDCG, Recall, TruncatedRecall, Precision, MRR, Novelty, ItemCoverage and Gini at several K.

    Args:
        n_items: number of score columns (RecBole's ``item_num``, padding included).
        topk: the cut-offs K.
        item_counts: ``(n_items,)`` training interactions per item (for Novelty).
        n_train_users: users with at least one training interaction (for Novelty).
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, n_items: int, topk: Sequence[int] = (10, 20),
                 item_counts: torch.Tensor | None = None, n_train_users: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.topk = sorted({int(k) for k in topk})
        if not self.topk or self.topk[0] < 1:
            raise ValueError(f"topk must be a non-empty list of positive integers, got {list(topk)}")
        if self.topk[-1] > n_items:
            raise ValueError(f"topk {self.topk[-1]} exceeds the number of items ({n_items})")
        self.n_items = int(n_items)
        if item_counts is None:
            self._self_info = None
        else:
            if n_train_users is None or n_train_users < 1:
                raise ValueError("n_train_users must be a positive integer when item_counts is given")
            self._self_info = self_information(torch.as_tensor(item_counts), n_train_users)
        nk = len(self.topk)
        self.add_state("n_users", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        for name in RANKING_METRICS:
            self.add_state(f"{name}_sum", torch.zeros(nk, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("exposure", torch.zeros(nk, self.n_items, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, scores: torch.Tensor, target: torch.Tensor) -> None:  # noqa: D102
        if scores.shape != target.shape or scores.shape[1] != self.n_items:
            raise ValueError(f"scores {tuple(scores.shape)} and target {tuple(target.shape)} must both be "
                             f"(users, {self.n_items})")
        # a user without positives counts nowhere: weighted by ``keep`` instead of filtered out, so no
        # step depends on how many there are (a boolean index would make a GPU wait for its count)
        target = target.bool()
        keep = target.any(dim=1)                                            # (B,)
        weight = keep.to(torch.float64)
        kmax = self.topk[-1]
        top = torch.topk(scores, kmax, dim=1).indices                       # (B, K)
        hits = target.gather(1, top).to(torch.float64)                      # (B, K)
        n_pos = target.sum(dim=1).to(torch.float64).clamp(min=1.0)          # (B,) 1 where there are none
        ranks = torch.arange(1, kmax + 1, device=scores.device, dtype=torch.float64)
        discount = 1.0 / torch.log2(ranks + 1.0)                            # (K,)
        dcg = torch.cumsum(hits * discount, dim=1)                          # (B, K)
        ideal = torch.cumsum(discount, dim=0)                               # (K,)
        n_hits = torch.cumsum(hits, dim=1)                                  # (B, K)
        first_hit = torch.where(hits.any(dim=1), hits.argmax(dim=1), kmax)  # (B,) 0-based rank
        if self._self_info is not None:
            if self._self_info.device != scores.device:                    # move once, not per batch
                self._self_info = self._self_info.to(scores.device)
            info = self._self_info[top]                                     # (B, K)
            mean_info = torch.cumsum(info, dim=1) / ranks
        for j, k in enumerate(self.topk):
            idcg = ideal[(n_pos.clamp(max=k) - 1).long()]
            self.ndcg_sum[j] += (dcg[:, k - 1] / idcg).sum()
            self.recall_sum[j] += (n_hits[:, k - 1] / n_pos).sum()
            self.truncatedrecall_sum[j] += (n_hits[:, k - 1] / n_pos.clamp(max=k)).sum()
            self.precision_sum[j] += n_hits[:, k - 1].sum() / k
            self.mrr_sum[j] += torch.where(first_hit < k, 1.0 / (first_hit + 1).double(),
                                           torch.zeros_like(n_pos)).sum()
            if self._self_info is not None:
                self.novelty_sum[j] += (mean_info[:, k - 1] * weight).sum()
            # index_add_, not bincount: on a GPU bincount reads the largest index back to the host
            self.exposure[j].index_add_(0, top[:, :k].reshape(-1), keep.long().repeat_interleave(k))
        self.n_users += weight.sum()

    def compute(self) -> dict[str, torch.Tensor]:  # noqa: D102
        out = {}
        n = self.n_users.clamp(min=1.0)
        for name in RANKING_METRICS:
            if name == "novelty" and self._self_info is None:
                continue
            values = getattr(self, f"{name}_sum") / n
            for j, k in enumerate(self.topk):
                out[f"{name}@{k}"] = values[j]
        for j, k in enumerate(self.topk):
            exposure = self.exposure[j].to(torch.float64)
            out[f"itemcoverage@{k}"] = (exposure > 0).sum().to(torch.float64) / self.n_items
            out[f"giniindex@{k}"] = gini_index(exposure)
        return out


def gini_index(counts: torch.Tensor) -> torch.Tensor:
    """Gini index of a histogram (0: all equal, -> 1: everything on one bin)."""
    counts = torch.sort(counts.to(torch.float64)).values
    n = counts.numel()
    total = counts.sum()
    if total == 0:
        return torch.zeros((), dtype=torch.float64, device=counts.device)
    idx = torch.arange(1, n + 1, dtype=torch.float64, device=counts.device)
    return ((2 * idx - n - 1) * counts).sum() / (n * total)
