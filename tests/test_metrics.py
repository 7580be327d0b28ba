"""TopKMetrics: hand-computed values, equality with RecBole's evaluator, exact DDP sums."""
import math

import numpy as np
import pytest
import torch
from recbole.evaluator import Collector, Evaluator

from lightning_genrec.data import InteractionData
from lightning_genrec.metrics import TopKMetrics, gini_index


def test_hand_computed_single_user():
    # items 1..5 ranked in order; positives 2 and 5; item 0 is padding
    scores = torch.tensor([[-math.inf, 5.0, 4.0, 3.0, 2.0, 1.0]])
    target = torch.tensor([[0, 0, 1, 0, 0, 1]], dtype=torch.bool)
    counts = torch.tensor([0, 8, 4, 2, 1, 1])
    m = TopKMetrics(6, topk=[2, 5], item_counts=counts, n_train_users=8)
    m.update(scores, target)
    r = {k: float(v) for k, v in m.compute().items()}
    d = 1 / math.log2(3)
    assert r["ndcg@2"] == pytest.approx(d / (1 + d))
    assert r["ndcg@5"] == pytest.approx((d + 1 / math.log2(6)) / (1 + d))
    assert r["recall@2"] == pytest.approx(0.5) and r["recall@5"] == pytest.approx(1.0)
    # hits / min(K, |T|): 1 hit of min(2, 2) at K=2, 2 of min(5, 2) at K=5
    assert r["truncatedrecall@2"] == pytest.approx(0.5) and r["truncatedrecall@5"] == pytest.approx(1.0)
    assert r["precision@2"] == pytest.approx(0.5) and r["precision@5"] == pytest.approx(0.4)
    assert r["mrr@2"] == pytest.approx(0.5) and r["mrr@5"] == pytest.approx(0.5)
    # self-information: item1 -log2(8/8)=0, item2 -log2(4/8)=1
    assert r["novelty@2"] == pytest.approx(0.5)
    assert r["novelty@5"] == pytest.approx((0 + 1 + 2 + 3 + 3) / 5)
    assert r["itemcoverage@2"] == pytest.approx(2 / 6)
    # exposure [0,1,1,0,0,0] -> sorted [0,0,0,0,1,1]: ((2*5-7) + (2*6-7)) / (6*2)
    assert r["giniindex@2"] == pytest.approx(8 / 12)


def test_users_without_positives_are_skipped_and_miss_scores_zero():
    scores = torch.tensor([[-math.inf, 3.0, 2.0, 1.0], [-math.inf, 3.0, 2.0, 1.0]])
    target = torch.tensor([[0, 0, 0, 1], [0, 0, 0, 0]], dtype=torch.bool)
    m = TopKMetrics(4, topk=[1])
    m.update(scores, target)
    r = m.compute()
    assert float(m.n_users) == 1
    assert float(r["ndcg@1"]) == 0 and float(r["mrr@1"]) == 0 and float(r["recall@1"]) == 0
    assert "novelty@1" not in r  # no popularity given


def test_a_user_without_positives_adds_nothing_to_novelty_or_exposure():
    # such a row is weighted out, not filtered (no data-dependent shape on a GPU): its top items, here
    # different from the other user's, must not reach coverage, Gini or Novelty
    scores = torch.tensor([[-math.inf, 3.0, 2.0, 1.0], [-math.inf, 1.0, 2.0, 3.0]])
    target = torch.tensor([[0, 0, 0, 1], [0, 0, 0, 0]], dtype=torch.bool)
    counts = torch.tensor([0, 4, 2, 1])
    both = TopKMetrics(4, topk=[1, 2], item_counts=counts, n_train_users=4)
    both.update(scores, target)
    alone = TopKMetrics(4, topk=[1, 2], item_counts=counts, n_train_users=4)
    alone.update(scores[:1], target[:1])
    assert float(both.n_users) == 1 and torch.equal(both.exposure, alone.exposure)
    for key, value in alone.compute().items():
        assert float(both.compute()[key]) == float(value), key


def test_gini_extremes():
    assert float(gini_index(torch.tensor([5, 5, 5, 5]))) == pytest.approx(0.0)
    assert float(gini_index(torch.tensor([0, 0, 0, 12]))) == pytest.approx(0.75)  # (n-1)/n


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="topk"):
        TopKMetrics(10, topk=[0])
    m = TopKMetrics(10, topk=[2])
    with pytest.raises(ValueError, match="scores"):
        m.update(torch.zeros(2, 9), torch.zeros(2, 9, dtype=torch.bool))


def test_truncated_recall_divides_by_k_when_there_are_more_positives():
    # 4 positives (items 1, 2, 4, 5); top 2 = items 1, 2 (2 hits): recall 2/4, truncated 2/min(2, 4) = 1
    scores = torch.tensor([[-math.inf, 5.0, 4.0, 3.0, 2.0, 1.0]])
    target = torch.tensor([[0, 1, 1, 0, 1, 1]], dtype=torch.bool)
    m = TopKMetrics(6, topk=[2, 3])
    m.update(scores, target)
    r = {k: float(v) for k, v in m.compute().items()}
    assert r["recall@2"] == pytest.approx(0.5) and r["truncatedrecall@2"] == pytest.approx(1.0)
    assert r["recall@3"] == pytest.approx(0.5) and r["truncatedrecall@3"] == pytest.approx(2 / 3)


def _recbole_result(config, train, loader, score_matrix):
    metrics = config["metrics"]
    config["metrics"] = [*metrics, "TruncatedRecall"]   # ours, registered in RecBole's evaluator
    try:
        collector, evaluator = Collector(config), Evaluator(config)
    finally:
        config["metrics"] = metrics
    collector.data_collect(train)
    for interaction, history_index, positive_u, positive_i in loader:
        users = interaction[config["USER_ID_FIELD"]]
        scores = score_matrix[users].clone()
        scores[:, 0] = -np.inf
        if history_index is not None:
            scores[history_index] = -np.inf
        collector.eval_batch_collect(scores, interaction, positive_u, positive_i)
    return evaluator.evaluate(collector.get_data_struct())


@pytest.mark.parametrize("kind", ["random", "popular", "ties"])
@pytest.mark.parametrize("phase", ["valid", "test"])
def test_equals_recbole_evaluator_on_ml100k(ml100k, kind, phase):
    config, dataset, train, valid, test = ml100k
    data = InteractionData.from_recbole(train, valid, test)
    g = torch.Generator().manual_seed(0)
    n_users, n_items = data.n_users, data.n_items
    if kind == "random":
        s = torch.rand(n_users, n_items, generator=g)
    elif kind == "popular":  # many hits: exercises every rank position
        s = torch.as_tensor(data.item_counts, dtype=torch.float32) + torch.rand(n_users, n_items, generator=g)
    else:  # coarse integer scores: many ties, the order is torch.topk's in both
        s = torch.randint(0, 5, (n_users, n_items), generator=g).float()
    expected = _recbole_result(config, train, valid if phase == "valid" else test, s)

    ours = TopKMetrics(n_items, topk=config["topk"], item_counts=torch.as_tensor(data.item_counts),
                       n_train_users=data.n_train_users)
    split = data.split(phase)
    for start in range(0, len(split.users), 300):  # several batches
        users = split.users[start:start + 300]
        batch = data.rows(users, phase)
        scores = s[torch.as_tensor(users)].masked_fill(batch["exclude"], -math.inf)
        scores[:, 0] = -math.inf
        ours.update(scores, batch["target"])
    got = {k: float(v) for k, v in ours.compute().items()}
    assert set(expected) == set(got)
    assert len(expected) == 8 * 3
    for key, value in expected.items():
        assert got[key] == pytest.approx(float(value), abs=1e-4), key


def test_states_are_sums_so_uneven_shards_reduce_exactly():
    g = torch.Generator().manual_seed(1)
    scores = torch.rand(37, 50, generator=g)
    target = torch.rand(37, 50, generator=g) < 0.1
    counts = torch.randint(0, 9, (50,), generator=g)
    full, a, b = (TopKMetrics(50, [3, 7], counts, 40) for _ in range(3))
    full.update(scores, target)
    a.update(scores[:30], target[:30])   # uneven shards, as rank 0 / rank 1 would see them
    b.update(scores[30:], target[30:])
    for name in full._defaults:
        assert torch.allclose(getattr(full, name), getattr(a, name) + getattr(b, name), rtol=0, atol=1e-12), name
