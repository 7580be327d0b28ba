"""Item -> users ranking: for each item, rank the users; the metrics of LARA's paper.

This is the transpose of RecBole's full ranking.  For one evaluation phase
(``valid`` / ``test`` of an :class:`~lightning_genrec.data.InteractionData`):

* the **items** evaluated are those with at least one held-out positive in the
  phase that the phase ranks at all (its ``candidates``, where it has a candidate
  set; under the cold-start item protocol: the phase's held-out items);
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

**Ties.**  Users with equal scores for an item are ranked by ascending user id,
whatever order the scores arrive in (a NaN score ranks first, as in
``torch.topk``; users not ranked for the item score ``-inf``, last).

**Memory.**  Nothing is dense in users x items (ML-20M: 138k x 27k cells, 15 GB
as float32).  The candidates and relevant users are sparse (C, U) matrices;
scores come in blocks of about :data:`CELLS` cells -- chunks of items over all
users from a model that scores items -> users directly
(:func:`phase_item_metrics`, LARA), or batches of users over all items from a
user -> item model, each user scored once (:func:`phase_item_metrics_from_users`)
-- and each block is merged into a running (C, K) top-K of users per item.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import scipy.sparse as sp
import torch

ITEM_METRICS = ("precision", "ndcg", "map")

#: score cells (users x items) in one block of scores: 2^24 float32 cells are 64 MB (their sort keys 128 MB)
CELLS = 2 ** 24

#: ``item_scores(items) -> (len(items), U)``: the scores of every user (padding id 0 included) for a chunk of items
ItemScores = Callable[[np.ndarray], torch.Tensor]
#: ``score(batch) -> (B, I)``: a user -> item model's scores of a batch ``data.rows(users, phase)``
UserScores = Callable[[dict], torch.Tensor]

_LOW = 2 ** 32   # the user id sits in the low 32 bits of a sort key


def item_metric_names(topk: Sequence[int]) -> list[str]:
    return [f"item_{m}@{k}" for m in ITEM_METRICS for k in sorted({int(k) for k in topk})]


def _cutoffs(topk: Sequence[int]) -> list[int]:
    topk = sorted({int(k) for k in topk})
    if not topk or topk[0] < 1:
        raise ValueError(f"topk must be positive integers, got {list(topk)}")
    return topk


def phase_items(data, phase: str) -> np.ndarray:
    """Items with at least one held-out positive in ``phase`` that the phase ranks (its
    ``candidates``, where the split has a candidate set)."""
    s = data.split(phase)
    items = np.flatnonzero(np.asarray((s.positives > 0).sum(axis=0)).ravel())
    candidates = getattr(s, "candidates", None)
    return items if candidates is None else items[np.isin(items, candidates)]


def _binary(m) -> sp.csr_matrix:
    """The nonzero pattern of ``m`` as a CSR bool matrix (sorted indices, no duplicates or stored zeros);
    ``m`` itself is left as it is."""
    m = sp.csr_matrix(m)
    if not m.has_canonical_format or not (m.data != 0).all():
        m = m.copy()
        m.sum_duplicates()
        m.eliminate_zeros()
    return sp.csr_matrix((np.ones(m.nnz, dtype=bool), m.indices, m.indptr), shape=m.shape)


def _union(*ms) -> sp.csr_matrix:
    return _binary(sum(_binary(m).astype(np.int8) for m in ms))


@dataclass
class ItemRelevance:
    """Who is ranked, and who is relevant, for each evaluated item; sparse, O(interactions)."""

    items: np.ndarray           # (C,) the evaluated item ids, ascending
    excluded: sp.csr_matrix     # (C, U) bool: users not ranked for the item (its history users, padding user 0)
    relevant: sp.csr_matrix     # (C, U) bool: the phase's positives among the ranked users

    @property
    def n_users(self) -> int:
        return self.excluded.shape[1]

    def n_relevant(self) -> np.ndarray:
        """(C,) relevant users per item."""
        return np.diff(self.relevant.indptr)

    def subset(self, rows: np.ndarray) -> "ItemRelevance":
        return ItemRelevance(self.items[rows], self.excluded[rows], self.relevant[rows])


def relevance(data, phase: str, items: np.ndarray) -> ItemRelevance:
    """The :class:`ItemRelevance` of ``items`` in ``phase``: an item's excluded users are its history
    users (training interactions, in ``test`` also validation ones, and the phase's excluded history of
    each user) and the padding user 0; its relevant users the phase's positives, minus the excluded."""
    s = data.split(phase)
    items = np.asarray(items, dtype=np.int64)
    padding = sp.csr_matrix((np.ones(len(items)), (np.zeros(len(items)), np.arange(len(items)))),
                            shape=(data.n_users, len(items)))
    history = [data.train[:, items], s.exclude[:, items], padding]                  # (U, C) each
    if phase == "test" and data.valid is not None:
        history.append(data.valid.positives[:, items])
    excluded = _union(*history).T.tocsr()                                           # (C, U)
    positives = _binary(s.positives[:, items].T).astype(np.int8)
    relevant = _binary(positives - positives.multiply(excluded.astype(np.int8)))
    return ItemRelevance(items, excluded, relevant)


def sort_keys(scores: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
    """int64 keys that order (score, user) pairs as the ranking does: a larger key is a higher
    score, and among equal scores a lower user id.  The high 32 bits are the float32 score's bits
    made order-preserving (negative floats flipped; -0.0 taken as 0.0, every NaN as one NaN above
    +inf), the low 32 bits are ``2**32 - 1 - user``; ``users`` broadcasts against ``scores``."""
    s = scores.float() + 0.0                                            # a new tensor; -0.0 becomes 0.0
    s = torch.where(torch.isnan(s), torch.full_like(s, float("nan")), s)
    bits = s.view(torch.int32)
    bits = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    return bits.long() * _LOW + (_LOW - 1 - users.long().to(bits.device))


def key_users(keys: torch.Tensor) -> torch.Tensor:
    """The user ids of :func:`sort_keys` keys."""
    return _LOW - 1 - torch.remainder(keys, _LOW)


def _mask(scores: torch.Tensor, excluded: sp.csr_matrix) -> torch.Tensor:
    """``scores`` (n, m) as a new float32 tensor, ``-inf`` where the (n, m) CSR ``excluded`` is set."""
    scores = scores.float() + 0.0
    excluded = excluded.tocoo()
    if excluded.nnz:
        rows = torch.from_numpy(excluded.row.astype(np.int64)).to(scores.device)
        cols = torch.from_numpy(excluded.col.astype(np.int64)).to(scores.device)
        scores[rows, cols] = -torch.inf
    return scores


def _top(keys: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` largest keys of each row, largest first (keys are distinct within a row)."""
    return keys.topk(min(k, keys.shape[1]), dim=1).values


def metrics_from_hits(hits: torch.Tensor, n_relevant: torch.Tensor, topk: Sequence[int]) -> dict[str, float]:
    """The metrics (module docstring), averaged over the items: ``hits`` (C, k) bool, whether the
    user at each rank is relevant (k = min(largest K, users)); ``n_relevant`` (C,), all positive."""
    topk = _cutoffs(topk)
    hits, n_rel = hits.double(), n_relevant.double()
    k_max = hits.shape[1]
    ranks = torch.arange(1, k_max + 1, dtype=torch.float64)
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


def _evaluated(data, phase: str) -> ItemRelevance:
    """The phase's items that have a relevant user among their candidates (the others are skipped)."""
    r = relevance(data, phase, phase_items(data, phase))
    keep = np.flatnonzero(r.n_relevant() > 0)
    if len(keep) == 0:
        raise ValueError("no item has a relevant user among the candidates: nothing to evaluate")
    return r.subset(keep)


def _metrics(r: ItemRelevance, keys: torch.Tensor, topk: Sequence[int]) -> dict[str, float]:
    users = key_users(keys).cpu().numpy()                                          # (C, k)
    rel = r.relevant.tocoo()
    relevant = np.sort(rel.row.astype(np.int64) * r.n_users + rel.col)           # (item row, user) pairs
    query = np.arange(len(r.items), dtype=np.int64)[:, None] * r.n_users + users
    pos = np.searchsorted(relevant, query).clip(max=max(len(relevant) - 1, 0))
    hits = relevant[pos] == query if len(relevant) else np.zeros(query.shape, dtype=bool)
    return metrics_from_hits(torch.from_numpy(hits), torch.from_numpy(r.n_relevant()), topk)


def phase_item_metrics(data, phase: str, item_scores: ItemScores, topk: Sequence[int],
                       cells: int = CELLS) -> dict[str, float]:
    """Item -> users metrics of ``phase`` for a model that scores items -> users:
    ``item_scores(items)`` gives the (c, U) scores of every user for a chunk of the phase's items,
    asked for about ``cells / U`` items at a time.  Items without a relevant candidate are skipped."""
    k = min(_cutoffs(topk)[-1], data.n_users)
    r = _evaluated(data, phase)
    users = torch.arange(r.n_users)
    step = max(1, cells // r.n_users)
    parts = []
    for a in range(0, len(r.items), step):
        chunk = slice(a, a + step)
        scores = item_scores(r.items[chunk])                                       # (c, U)
        if tuple(scores.shape) != (len(r.items[chunk]), r.n_users):
            raise ValueError(f"item_scores gave {tuple(scores.shape)} for {len(r.items[chunk])} items; expected "
                             f"(items, {r.n_users} users)")
        parts.append(_top(sort_keys(_mask(scores, r.excluded[chunk]), users), k))   # (c, k)
    return _metrics(r, torch.cat([p.cpu() for p in parts]), topk)


def user_score_blocks(score: UserScores, data, phase: str, items: np.ndarray,
                      cells: int = CELLS) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """``(users, scores)`` for every user but the padding id, about ``cells / I`` at a time:
    ``score(data.user_batch(users, phase))``'s (B, I) rows (the model's input only: no dense
    masks to build and copy), of which the ``items`` columns (B, C)."""
    step = max(1, cells // data.n_items)
    users = np.arange(1, data.n_users)
    columns = torch.as_tensor(items, dtype=torch.long)
    with torch.no_grad():
        for a in range(0, len(users), step):
            batch = users[a:a + step]
            rows = score(data.user_batch(batch, phase))                            # (B, I)
            columns = columns.to(rows.device)                                      # copied once
            yield batch, rows[:, columns]


def phase_item_metrics_from_users(data, phase: str, score: UserScores, topk: Sequence[int],
                                  cells: int = CELLS) -> dict[str, float]:
    """Item -> users metrics of ``phase`` for a user -> item model: every user is scored once
    (``score`` on :func:`user_score_blocks`), and each batch of users is merged into the running
    top-K users of each item."""
    k = min(_cutoffs(topk)[-1], data.n_users)
    r = _evaluated(data, phase)
    by_user = r.excluded.T.tocsr()                                                   # (U, C)
    # the padding user 0: never scored, ranked last (-inf) for every item
    top = _top(sort_keys(torch.full((len(r.items), 1), -torch.inf), torch.zeros(1, dtype=torch.long)), k)
    for users, scores in user_score_blocks(score, data, phase, r.items, cells):
        keys = sort_keys(_mask(scores, by_user[users]), torch.from_numpy(users)[:, None]).T    # (C, B)
        top = _top(torch.cat([top.to(keys.device), keys], dim=1), k)
    return _metrics(r, top, topk)


__all__ = ["CELLS", "ITEM_METRICS", "ItemRelevance", "ItemScores", "UserScores", "item_metric_names", "key_users",
           "metrics_from_hits", "phase_item_metrics", "phase_item_metrics_from_users", "phase_items", "relevance",
           "sort_keys", "user_score_blocks"]
