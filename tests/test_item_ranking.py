"""Item -> users ranking metrics: the definitions, the candidate users, streaming in bounded blocks (equal to a
dense reference), ties, and the switch for any model."""
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import recbole_ext
from lightning_genrec import MVAE, InteractionData
from recbole_ext import RecBoleDataModule
from lightning_genrec.data import EvalSplit
from lightning_genrec.item_ranking import (item_metric_names, key_users, phase_item_metrics,
                                           phase_item_metrics_from_users, phase_items, relevance, sort_keys,
                                           user_score_blocks)
from recbole_ext.config import ConfigError, make_config

from conftest import assert_close_across_batch_shapes


def _m(n_users, n_items, cells):
    rows, cols = (list(c) for c in zip(*cells)) if cells else ([], [])
    return sp.csr_matrix(([1.0] * len(rows), (rows, cols)), shape=(n_users, n_items))


def _test_only(n_users, n_items, train, test_users, history, positives):
    """InteractionData with a test split only: ``train``, ``history`` (RecBole's excluded history) and
    ``positives`` are (user, item) cells."""
    m = lambda cells: _m(n_users, n_items, cells)   # noqa: E731
    counts = np.asarray(m(train).sum(axis=0)).ravel().astype(np.int64)
    return InteractionData(n_users, n_items, m(train), counts, len({u for u, _ in train}),
                           test=EvalSplit(np.array(test_users), m(history), m(positives)))


def _fixed(scores):
    """``item_scores`` over the columns ``scores`` (I, U) holds for each item."""
    return lambda items: scores[torch.as_tensor(items)]


def test_metrics_of_a_hand_checked_ranking():
    # item 1 ranks users 3, 1, 4, 2 (user 0, the padding, excluded); relevant {1, 2}
    data = _test_only(5, 2, [], [1, 2], [], [(1, 1), (2, 1)])
    scores = torch.tensor([[0.0] * 5, [9.0, 3.0, 1.0, 4.0, 2.0]])
    out = phase_item_metrics(data, "test", _fixed(scores), [2, 4])
    d = 1 / math.log2(3)
    assert out["item_precision@2"] == pytest.approx(0.5)
    assert out["item_ndcg@2"] == pytest.approx(d / (1 + d))
    assert out["item_map@2"] == pytest.approx((1 / 2) / 2)               # P@2 at the hit, / min(|rel|, 2)
    assert out["item_precision@4"] == pytest.approx(0.5)
    assert out["item_ndcg@4"] == pytest.approx((d + 1 / math.log2(5)) / (1 + d))
    assert out["item_map@4"] == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert list(out) == item_metric_names([2, 4])
    # the same numbers when the model's user -> item scores are streamed, one user a block
    assert phase_item_metrics_from_users(data, "test", lambda batch: scores.T[batch["user"]], [2, 4],
                                         cells=2) == out


def test_candidates_exclude_every_users_history_of_the_item():
    # 4 users (0 = padding), 3 items; item 1 is a test item of user 3; user 2 met it in validation only,
    # user 1 in training: neither is a candidate for it in test; user 2 is one in validation's sense
    m = lambda cells: _m(4, 3, cells)   # noqa: E731
    data = InteractionData(4, 3, m([(1, 1), (1, 2), (3, 2)]), np.array([0, 1, 2]), 2,
                               valid=EvalSplit(np.array([2]), m([]), m([(2, 1)])),
                               test=EvalSplit(np.array([3]), m([(3, 2)]), m([(3, 1)])))
    r = relevance(data, "test", np.array([1]))
    assert r.relevant.toarray().tolist() == [[False, False, False, True]]
    assert r.excluded.toarray().tolist() == [[True, True, True, False]]
    assert r.excluded.shape == (1, 4) and r.n_relevant().tolist() == [1]
    r = relevance(data, "valid", np.array([1]))
    assert r.excluded.toarray().tolist() == [[True, True, False, False]]


def test_excluded_users_are_never_ranked_and_items_without_relevant_users_are_skipped():
    # users 1..3, items 1..3.  Item 1: its top user 1 has it in training, so user 2 ranks first: no hit.
    # Item 2: its top user 3 is relevant: a hit.  Item 3: its one positive user 2 has it in the excluded
    # history, so it has no relevant candidate and is skipped (counted, precision@1 would be 1/3)
    data = _test_only(4, 4, [(1, 1)], [1, 2, 3], [(2, 3)], [(1, 1), (3, 1), (3, 2), (2, 3)])
    scores = torch.tensor([[0.0] * 4, [0.0, 5.0, 4.0, 3.0], [0.0, 1.0, 2.0, 3.0], [0.0, 1.0, 9.0, 2.0]])
    out = phase_item_metrics(data, "test", _fixed(scores), [1])
    assert out["item_precision@1"] == 0.5 and out["item_ndcg@1"] == 0.5
    everything_known = _test_only(4, 4, [(1, 1), (3, 1)], [1], [], [(1, 1), (3, 1)])
    with pytest.raises(ValueError, match="nothing to evaluate"):
        phase_item_metrics(everything_known, "test", _fixed(scores), [1])


def _brute_force(data, phase, scores_ui, k):
    """Per item: rank all users but 0 and the item's history users; RecBole's formulas."""
    s = data.split(phase)
    history = ((data.train + s.exclude) > 0).toarray()
    if phase == "test":
        history |= (data.valid.positives > 0).toarray()      # a validation interaction is history for test
    pos = (s.positives > 0).toarray()
    p, n, m = [], [], []
    for i in np.flatnonzero(pos.any(axis=0)):
        cand = [u for u in range(1, data.n_users) if not history[u, i]]
        order = sorted(cand, key=lambda u: -scores_ui[u, i])[:k]
        hits = [pos[u, i] for u in order]
        n_rel = min(int(pos[:, i].sum()), k)
        p.append(sum(hits) / k)
        n.append(sum(h / math.log2(r + 2) for r, h in enumerate(hits)) / sum(1 / math.log2(r + 2) for r in range(n_rel)))
        m.append(sum(sum(hits[: r + 1]) / (r + 1) for r, h in enumerate(hits) if h) / n_rel)
    return np.mean(p), np.mean(n), np.mean(m)


def test_phase_metrics_equal_a_brute_force_transposed_ranking(tiny_config):
    dm = RecBoleDataModule("tiny", model="MVAE", config_dict=tiny_config)
    dm.setup()
    data: InteractionData = dm.data
    rng = np.random.default_rng(0)
    scores_ui = rng.random((data.n_users, data.n_items))
    out = phase_item_metrics(data, "test", lambda items: torch.from_numpy(scores_ui[:, items].T), [5])
    p, n, m = _brute_force(data, "test", scores_ui, 5)
    assert out["item_precision@5"] == pytest.approx(p)
    assert out["item_ndcg@5"] == pytest.approx(n)
    assert out["item_map@5"] == pytest.approx(m)
    assert len(phase_items(data, "test")) > 10


def test_user_score_blocks_are_the_models_user_scores_in_bounded_batches(tiny_config):
    dm = RecBoleDataModule("tiny", model="MVAE", config_dict=tiny_config)
    dm.setup()
    data = dm.data
    model = MVAE(n_items=dm.n_items).eval()
    model.attach_data(data)
    items = np.array([3, 7, 11])
    blocks = list(user_score_blocks(model.score, data, "test", items, cells=7 * data.n_items))
    users = np.arange(1, data.n_users)
    assert np.array_equal(np.concatenate([u for u, _ in blocks]), users)            # every user once, in order
    assert max(len(u) for u, _ in blocks) == 7 and all(s.shape == (len(u), 3) for u, s in blocks)
    with torch.no_grad():
        expected = model.score(data.rows(users, "test"))[:, items].T
        got = model.item_user_scores(items, "test")                 # the default: the user scores, transposed
    assert got.shape == (3, data.n_users)
    assert torch.isinf(got[:, 0]).all()
    # 7 users a batch against all at once: equal up to float32 accumulation order, not bit for bit
    assert_close_across_batch_shapes(torch.cat([s for _, s in blocks]).T, expected)
    assert_close_across_batch_shapes(got[:, 1:], expected)


# -- streaming: equal to a dense reference --------------------------------------------------------------

def _dense_reference(data, phase, scores_ui, topk):
    """The implementation before issue 15 (dense (C, U) candidates and scores), kept as a reference."""
    s = data.split(phase)
    items = np.flatnonzero(np.asarray((s.positives > 0).sum(axis=0)).ravel())
    relevant = torch.from_numpy((s.positives[:, items] > 0).T.toarray())
    history = sp.csr_matrix(data.train[:, items] > 0) + sp.csr_matrix(s.exclude[:, items] > 0)
    if phase == "test" and data.valid is not None:
        history = history + sp.csr_matrix(data.valid.positives[:, items] > 0)
    excluded = torch.from_numpy((history > 0).T.toarray())
    excluded[:, 0] = True
    scores = torch.from_numpy(scores_ui[:, items].T).float().masked_fill(excluded, -torch.inf)
    relevant = relevant & ~excluded
    n_rel = relevant.sum(dim=1)
    keep = n_rel > 0
    scores, relevant, n_rel = scores[keep], relevant[keep], n_rel[keep].double()
    k_max = min(max(topk), scores.shape[1])
    hits = relevant.gather(1, scores.topk(k_max, dim=1).indices).double()
    ranks = torch.arange(1, k_max + 1, dtype=torch.float64)
    discount = 1.0 / torch.log2(ranks + 1.0)
    dcg, ideal = (hits * discount).cumsum(dim=1), discount.cumsum(dim=0)
    ap_sum = (hits.cumsum(dim=1) / ranks * hits).cumsum(dim=1)
    out = {}
    for k in sorted(topk):
        i, denom = min(k, k_max) - 1, torch.clamp(n_rel, max=k)
        out[f"item_precision@{k}"] = float((hits[:, : i + 1].sum(dim=1) / k).mean())
        out[f"item_ndcg@{k}"] = float((dcg[:, i] / ideal[(denom - 1).long().clamp(max=i)]).mean())
        out[f"item_map@{k}"] = float((ap_sum[:, i] / denom).mean())
    return out


def _distinct_scores(data, seed):
    """(U, I) scores without ties: a permutation of 0 .. U*I - 1, exact in float32 (U*I < 2**24)."""
    rng = np.random.default_rng(seed)
    return rng.permutation(data.n_users * data.n_items).reshape(data.n_users, data.n_items).astype(np.float32)


@pytest.mark.parametrize("protocol", ["warm", "cold"])
def test_streamed_metrics_equal_the_dense_reference(tiny_config, protocol):
    cold = {"cold_item_split": True, "cold_item_ratio": 0.3} if protocol == "cold" else {}
    dm = RecBoleDataModule("tiny", model="MVAE", config_dict=dict(tiny_config, **cold))
    dm.setup()
    data = dm.data
    topk = [1, 5, 10, 100]                                                     # 100 > the 61 users: k = U
    for phase, seed in (("valid", 0), ("test", 1)):
        scores = _distinct_scores(data, seed)
        expected = _dense_reference(data, phase, scores, topk)
        by_items = torch.from_numpy(scores.T)
        asked = []

        def item_scores(items):
            asked.append(len(items))
            return by_items[torch.as_tensor(items)]

        def user_scores(batch):
            asked.append(len(batch["user"]))
            return torch.from_numpy(scores)[batch["user"]]

        for cells in (1, 3 * data.n_users, 2 ** 24):                             # 1 item a chunk, 3, all
            asked.clear()
            got = phase_item_metrics(data, phase, item_scores, topk, cells=cells)
            assert max(asked) == max(1, min(cells // data.n_users, len(phase_items(data, phase))))
            assert got == pytest.approx(expected, abs=1e-12)                   # float64 sums of the same hits
        for cells in (1, 5 * data.n_items, 2 ** 24):                             # 1 user a batch, 5, all
            asked.clear()
            got = phase_item_metrics_from_users(data, phase, user_scores, topk, cells=cells)
            assert max(asked) == max(1, min(cells // data.n_items, data.n_users - 1))
            assert got == pytest.approx(expected, abs=1e-12)


def test_ties_go_to_the_lower_user_id_whatever_the_block_order():
    keys = sort_keys(torch.tensor([[1.0, 2.0, 2.0, -0.0, 0.0, -torch.inf, float("nan")]]),
                     torch.arange(7))
    assert key_users(keys.topk(7, dim=1).values).tolist() == [[6, 1, 2, 0, 3, 4, 5]]   # NaN first, -inf last
    # every user scores 1.0 for every item: each item ranks its candidates 1, 2, 3, ... in that order.
    # Item 1 (user 1 has it in training): users 2, 3 -- 2 is a hit; item 2: users 1, 2 -- 1 is a hit
    # (the highest ids first would give no hit at all)
    data = _test_only(8, 3, [(1, 1)], [1, 2, 5], [], [(2, 1), (5, 1), (1, 2)])
    ones = torch.ones(3, 8)
    for cells in (1, 8, 100):                                # 1 item or user a block, one item / user, all
        assert phase_item_metrics(data, "test", _fixed(ones), [2], cells=cells)["item_precision@2"] == 0.5
        assert phase_item_metrics_from_users(data, "test", lambda b: ones.T[b["user"]], [2],
                                             cells=cells)["item_precision@2"] == 0.5


def test_any_model_can_report_and_select_on_item_metrics(tiny_config):
    cfg = dict(tiny_config, epochs=2, item_metrics=True, valid_metric="item_ndcg@10")
    result = recbole_ext.run_recbole(model="MVAE", dataset="tiny", config_dict=cfg)
    assert set(item_metric_names([5, 10])) <= set(result["test_result"])
    assert set(item_metric_names([5, 10])) <= set(result["best_valid_result"])
    assert 0 < result["test_result"]["item_ndcg@10"] <= 1


def test_selecting_on_item_metrics_without_them_is_a_clear_error(tiny_config):
    with pytest.raises(ConfigError, match="item_metrics: true"):
        make_config("MVAE", "tiny", config_dict=dict(tiny_config, valid_metric="item_ndcg@10"))


def test_sequential_models_refuse_item_metrics(tiny_config):
    with pytest.raises(ConfigError, match="SVAE is a sequential model.*item_metrics: false"):
        make_config("SVAE", "tiny", config_dict=dict(tiny_config, item_metrics=True))
