"""Item -> users ranking: for each item, rank the users; the metrics of LARA's paper.

This is the transpose of RecBole's full ranking.  For one evaluation phase
(``valid`` / ``test`` of an :class:`~lightning_genrec.data.InteractionData`):

* the **items** evaluated are those with at least one held-out positive in the
  phase (under the cold-start item protocol: the phase's held-out items);
* the **candidates** for an item are all users (RecBole's padding id 0 excepted),
  minus those who already have the item in their history (training interactions;
  for ``test`` also validation interactions; and whatever RecBole excludes for
  the phase) -- so, as in user -> item ranking, known positives are never ranked;
* an item's **relevant** users are those with the (user, item) pair among the
  phase's held-out positives.

Metrics at each K, averaged over the evaluated items (names prefixed ``item_`` so
they sit beside RecBole's user -> item metrics in one result dict):

* ``item_precision@K`` = hits in the top K / K;
* ``item_ndcg@K``: binary gains, log2 discount, ideal DCG over min(|relevant|, K)
  hits (RecBole's NDCG, transposed);
* ``item_map@K`` = sum over ranks i <= K of P@i * rel_i, / min(|relevant|, K)
  (RecBole's MAP, transposed).

LARA's released evaluation code normalises differently (its NDCG divides by the
ideal ordering of the K retrieved users, its AP by the hits among them), which
gives larger numbers; we keep RecBole's definitions so both directions are read
the same way.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import scipy.sparse as sp
import torch

ITEM_METRICS = ("precision", "ndcg", "map")


def item_metric_names(topk: Sequence[int]) -> list[str]:
    return [f"item_{m}@{k}" for m in ITEM_METRICS for k in sorted({int(k) for k in topk})]


def phase_items(data, phase: str) -> np.ndarray:
    """Items with at least one held-out positive in ``phase``."""
    positives = data.split(phase).positives
    return np.flatnonzero(np.asarray((positives > 0).sum(axis=0)).ravel())


def relevance(data, phase: str, items: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """``(relevant, excluded)``, both (C, U) bool for the ``items``: the phase's positives, and
    the users who must not be ranked for the item (its history users -- training interactions,
    in ``test`` also validation ones, and what RecBole excludes for the phase's users -- and
    the padding user 0)."""
    s = data.split(phase)
    relevant = (s.positives[:, items] > 0).T.toarray()
    history = sp.csr_matrix(data.train[:, items] > 0) + sp.csr_matrix(s.exclude[:, items] > 0)
    if phase == "test" and data.valid is not None:
        history = history + sp.csr_matrix(data.valid.positives[:, items] > 0)
    excluded = (history > 0).T.toarray()
    excluded[:, 0] = True
    return torch.from_numpy(relevant), torch.from_numpy(excluded)


def item_user_metrics(scores: torch.Tensor, relevant: torch.Tensor, excluded: torch.Tensor,
                      topk: Sequence[int]) -> dict[str, float]:
    """Item -> users metrics from ``scores`` (C, U): higher = the user is ranked first for the item.

    Items without a relevant candidate are skipped.  Returns ``{item_precision@K, item_ndcg@K,
    item_map@K}`` averaged over the remaining items."""
    topk = sorted({int(k) for k in topk})
    if not topk or topk[0] < 1:
        raise ValueError(f"topk must be positive integers, got {list(topk)}")
    scores = scores.float().masked_fill(excluded.to(scores.device), -torch.inf)
    relevant = relevant.to(scores.device) & ~excluded.to(scores.device)
    n_rel = relevant.sum(dim=1)
    keep = n_rel > 0
    if not bool(keep.any()):
        raise ValueError("no item has a relevant user among the candidates: nothing to evaluate")
    scores, relevant, n_rel = scores[keep], relevant[keep], n_rel[keep].double()
    k_max = min(topk[-1], scores.shape[1])
    top = scores.topk(k_max, dim=1).indices                                      # (C, k)
    hits = relevant.gather(1, top).double()                                      # (C, k)
    ranks = torch.arange(1, k_max + 1, dtype=torch.float64, device=hits.device)
    discount = 1.0 / torch.log2(ranks + 1.0)
    dcg = (hits * discount).cumsum(dim=1)
    ideal = discount.cumsum(dim=0)
    prec_at = hits.cumsum(dim=1) / ranks                                         # P@i
    ap_sum = (prec_at * hits).cumsum(dim=1)
    out = {}
    for k in topk:
        i = min(k, k_max) - 1
        denom = torch.clamp(n_rel, max=k)
        out[f"item_precision@{k}"] = float((hits[:, : i + 1].sum(dim=1) / k).mean())
        out[f"item_ndcg@{k}"] = float((dcg[:, i] / ideal[(denom - 1).long().clamp(max=i)]).mean())
        out[f"item_map@{k}"] = float((ap_sum[:, i] / denom).mean())
    return {name: out[name] for name in item_metric_names(topk)}


def phase_item_metrics(data, phase: str, item_scores: Callable[[np.ndarray], torch.Tensor],
                       topk: Sequence[int]) -> dict[str, float]:
    """Item -> users metrics of ``phase``; ``item_scores(items)`` gives (C, U) scores for them."""
    items = phase_items(data, phase)
    relevant, excluded = relevance(data, phase, items)
    return item_user_metrics(item_scores(items), relevant, excluded, topk)


def scores_from_users(score: Callable[[dict], torch.Tensor], data, phase: str,
                      users_per_batch: int = 256) -> Callable[[np.ndarray], torch.Tensor]:
    """An ``item_scores`` for any user -> item model: every user's (1 .. U-1) score row, as the
    model scores the user in ``phase`` (``score(batch)`` on ``data.rows(users)``), transposed."""
    @torch.no_grad()
    def item_scores(items: np.ndarray) -> torch.Tensor:
        users = np.arange(1, data.n_users)
        cols = torch.as_tensor(items, dtype=torch.long)
        parts = [torch.full((1, len(items)), -torch.inf)]                       # user 0: padding
        for chunk in np.array_split(users, max(1, int(np.ceil(len(users) / users_per_batch)))):
            parts.append(score(data.rows(chunk, phase)).float().cpu()[:, cols])
        return torch.cat(parts).T                                              # (C, U)
    return item_scores


__all__ = ["ITEM_METRICS", "item_metric_names", "item_user_metrics", "phase_item_metrics", "phase_items",
           "relevance", "scores_from_users"]
