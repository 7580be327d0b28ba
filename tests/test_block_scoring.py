"""RecBole's evaluator asks our models for scores batch by batch (``eval_batch_size`` scores);
the adapter scores the users the loader will ask for in larger blocks, in the loader's order
(``GenRecAdapter.plan_scoring``).  The results must be the ones of batch-by-batch scoring."""
import numpy as np
import pytest
import torch
from recbole.utils import get_trainer

import lightning_genrec.data as data
from recbole_ext.config import load_data, make_config
from recbole_ext.registry import adapter_class
from tests.conftest import small_config

# float sums over other block shapes may round differently: metrics (unrounded) agree to this
TOL = 1e-6


def _trained(name, tiny_config, **extra):
    config = make_config(name, "tiny", config_dict=small_config(name, tiny_config, epochs=1, metric_decimal_place=12,
                                                                **extra))
    _, train, valid, test = load_data(config)
    model = adapter_class(name)(config, train._dataset)
    trainer = get_trainer(config["MODEL_TYPE"], name)(config, model)
    trainer.fit(train, valid, saved=False, show_progress=False)
    return trainer, model, test


def _count_scores(model, monkeypatch):
    calls = []
    score = model.module.score

    def counted(batch):
        calls.append(len(batch["user"]))
        return score(batch)

    monkeypatch.setattr(model.module, "score", counted)
    return calls


@pytest.mark.parametrize("name", ["MVAE", "CVAE", "CFGAN", "LARA"])
@pytest.mark.parametrize("batches_a_block", [None, 2])
def test_block_scoring_gives_the_batch_by_batch_results(name, batches_a_block, tiny_config, monkeypatch):
    trainer, model, test = _trained(name, tiny_config)
    users, s = len(test.uid_list), test.step
    assert s < users                                   # RecBole asks in several batches here
    if batches_a_block:                                # several blocks, RecBole masking each batch in place
        monkeypatch.setattr(data, "SCORE_BLOCK", batches_a_block * s * model.n_items)
    calls = _count_scores(model, monkeypatch)
    blocked = trainer.evaluate(test, load_best_model=False)
    per_block = batches_a_block * s if batches_a_block else users    # default: every test user at once
    assert calls == [min(per_block, users - i) for i in range(0, users, per_block)]
    calls.clear()
    monkeypatch.setattr(data, "SCORE_BLOCK", 0)    # no plan: the adapter scores RecBole's batches
    plain = trainer.evaluate(test, load_best_model=False)
    assert len(calls) > 1 and max(calls) <= test.step
    assert blocked.keys() == plain.keys()
    assert blocked == pytest.approx(plain, abs=TOL)


def test_blocks_follow_the_loader_and_fall_back_out_of_order(tiny_config, monkeypatch):
    trainer, model, test = _trained("MVAE", tiny_config)
    order = test.uid_list.numpy()
    s = test.step                                      # users in one of RecBole's batches
    assert len(order) >= 5 * s + 1
    monkeypatch.setattr(data, "SCORE_BLOCK", 2 * s * model.n_items)   # blocks of two batches
    model.eval()                                       # as RecBole's evaluate does
    model.eval_phase = "test"
    model.plan_scoring(test)
    score = model.module.score
    calls = _count_scores(model, monkeypatch)

    def direct(users):                                 # not counted
        with torch.no_grad():
            return score(model.data.user_batch(users, "test"))

    def asked(users):
        return model.full_sort_predict({model.USER_ID: torch.as_tensor(users)}).view(len(users), -1)

    with torch.no_grad():
        first = asked(order[:s])                       # starts a block of two batches
        second = asked(order[s:2 * s])                 # served from it
        assert calls == [2 * s]
        third = asked(order[2 * s:3 * s])              # the next block
        assert calls == [2 * s, 2 * s]
        torch.testing.assert_close(torch.cat([first, second, third]), direct(order[:3 * s]),
                                   atol=1e-6, rtol=1e-5)
        straddle = asked(order[3 * s + 1:4 * s + 1])   # ends past the block: a new one starts here
        assert calls == [2 * s, 2 * s, 2 * s]
        torch.testing.assert_close(straddle, direct(order[3 * s + 1:4 * s + 1]), atol=1e-6, rtol=1e-5)
        calls.clear()
        again = asked(order[:2])                       # already handed out: scored afresh, as asked
        back = order[5 * s - 1:4 * s + 1:-1].copy()    # not the loader's order: scored as asked
        got = asked(back)
        assert calls == [2, len(back)]
        torch.testing.assert_close(again, direct(order[:2]), atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(got, direct(back), atol=1e-6, rtol=1e-5)
    model.plan_scoring(None)
    calls.clear()
    asked(order[:4])
    assert calls == [4]                                # no plan: the batch as asked


def test_no_plan_when_recboles_batches_are_large_enough(tiny_config, monkeypatch):
    trainer, model, test = _trained("MVAE", tiny_config)
    monkeypatch.setattr(data, "SCORE_BLOCK", test.step * model.n_items)
    model.plan_scoring(test)
    assert model._plan is None
    model.plan_scoring(None)
    assert np.all(test.uid_list.numpy() >= 0)


def test_evaluation_batches_hold_whole_recbole_batches_of_about_a_score_block():
    from lightning_genrec.data import SCORE_BLOCK, users_per_eval_batch

    # ML-20M's items at the scale benchmark's eval_batch_size: RecBole's 15 users a batch, 20 of them
    assert users_per_eval_batch(409_600, 26_744) == 300 <= SCORE_BLOCK // 26_744
    assert users_per_eval_batch(409_600, 26_744, block=False) == 15        # sequential models: RecBole's
    assert users_per_eval_batch(100 * SCORE_BLOCK, 1000) == 100 * SCORE_BLOCK // 1000   # larger: as asked
    assert users_per_eval_batch(10, 2 * SCORE_BLOCK) == 1                               # at least one user
