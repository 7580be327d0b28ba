"""Item -> users ranking metrics: the definitions, the candidate users, and the switch for any model."""
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import recbole_ext
from lightning_genrec import MVAE, InteractionData
from recbole_ext import RecBoleDataModule
from lightning_genrec.data import EvalSplit
from lightning_genrec.item_ranking import (item_metric_names, item_user_metrics, phase_item_metrics, phase_items,
                                           relevance, scores_from_users)
from recbole_ext.config import ConfigError, make_config

from conftest import assert_close_across_batch_shapes


def test_metrics_of_a_hand_checked_ranking():
    # item 0 ranks users 3, 1, 4, 2 (user 0 excluded); relevant {1, 2}
    scores = torch.tensor([[9.0, 3.0, 1.0, 4.0, 2.0]])
    relevant = torch.tensor([[False, True, True, False, False]])
    excluded = torch.tensor([[True, False, False, False, False]])
    out = item_user_metrics(scores, relevant, excluded, [2, 4])
    d = 1 / math.log2(3)
    assert out["item_precision@2"] == pytest.approx(0.5)
    assert out["item_ndcg@2"] == pytest.approx(d / (1 + d))
    assert out["item_map@2"] == pytest.approx((1 / 2) / 2)               # P@2 at the hit, / min(|rel|, 2)
    assert out["item_precision@4"] == pytest.approx(0.5)
    assert out["item_ndcg@4"] == pytest.approx((d + 1 / math.log2(5)) / (1 + d))
    assert out["item_map@4"] == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert list(out) == item_metric_names([2, 4])


def test_candidates_exclude_every_users_history_of_the_item():
    # 4 users (0 = padding), 3 items; item 1 is a test item of user 3; user 2 met it in validation only,
    # user 1 in training: neither is a candidate for it in test; user 2 is one in validation's sense
    def m(cells):
        rows, cols = (list(c) for c in zip(*cells)) if cells else ([], [])
        return sp.csr_matrix(([1.0] * len(rows), (rows, cols)), shape=(4, 3))
    data = InteractionData(4, 3, m([(1, 1), (1, 2), (3, 2)]), np.array([0, 1, 2]), 2,
                               valid=EvalSplit(np.array([2]), m([]), m([(2, 1)])),
                               test=EvalSplit(np.array([3]), m([(3, 2)]), m([(3, 1)])))
    relevant, excluded = relevance(data, "test", np.array([1]))
    assert relevant.tolist() == [[False, False, False, True]]
    assert excluded.tolist() == [[True, True, True, False]]
    _, excluded = relevance(data, "valid", np.array([1]))
    assert excluded.tolist() == [[True, True, False, False]]


def test_excluded_users_are_never_ranked_and_items_without_relevant_users_are_skipped():
    scores = torch.tensor([[5.0, 4.0, 3.0], [1.0, 2.0, 3.0]])
    relevant = torch.tensor([[True, False, True], [False, False, False]])
    excluded = torch.tensor([[True, False, False], [False, False, False]])
    out = item_user_metrics(scores, relevant, excluded, [1])
    # item 0: user 0 (top score, relevant) is history, so user 1 ranks first: no hit; item 1 skipped
    assert out["item_precision@1"] == 0.0 and out["item_ndcg@1"] == 0.0
    with pytest.raises(ValueError, match="nothing to evaluate"):
        item_user_metrics(scores, relevant & False, excluded, [1])


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


def test_scores_from_users_transposes_the_models_user_scores(tiny_config):
    dm = RecBoleDataModule("tiny", model="MVAE", config_dict=tiny_config)
    dm.setup()
    model = MVAE(n_items=dm.n_items).eval()
    items = np.array([3, 7, 11])
    with torch.no_grad():
        got = scores_from_users(model.score, dm.data, "test", users_per_batch=7)(items)
        users = np.arange(1, dm.data.n_users)
        expected = model.score(dm.data.rows(users, "test"))[:, items].T
    assert got.shape == (3, dm.data.n_users)
    assert torch.isinf(got[:, 0]).all()
    # 7 users a batch against all at once: equal up to float32 accumulation order, not bit for bit
    assert_close_across_batch_shapes(got[:, 1:], expected)


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
