"""The cold-start item protocol: whole items held out, seeded, ranked alone (a candidate set applied at scoring
time, not exclusion lists); RecBole's own models get the numbers of a dense computation; warm splits untouched."""
import numpy as np
import pytest
import torch

import recbole_ext  # noqa: F401  (compat and the protocol's patches before recbole is used)
from recbole.data.interaction import Interaction
from recbole.utils.case_study import full_sort_topk
from lightning_genrec.data import item_counts
from lightning_genrec.metrics import TopKMetrics
from recbole_ext import RecBoleDataModule
from recbole_ext import cold_start, patches
from recbole_ext.compat import load_data_and_model
from recbole_ext.config import ConfigError, load_data, make_config

COLD = {"cold_item_split": True, "cold_item_ratio": 0.3, "cold_item_valid_ratio": 0.5}


def _split(tiny_config, model="MVAE", **extra):
    config = make_config(model, "tiny", config_dict={**tiny_config, **COLD, **extra})
    return config, load_data(config)


def _items(loader):
    return set(loader._dataset.inter_feat[loader._dataset.iid_field].numpy().tolist())


def test_held_out_items_never_reach_training(tiny_config):
    _, (dataset, train, valid, test) = _split(tiny_config)
    train_items, valid_items, test_items = _items(train), _items(valid), _items(test)
    assert not train_items & valid_items and not train_items & test_items and not valid_items & test_items
    n_items = len(train_items | valid_items | test_items)
    assert len(valid_items | test_items) == round(0.3 * n_items)
    assert abs(len(valid_items) - len(test_items)) <= 1
    # every interaction lands in exactly one split
    assert len(train.dataset) + len(valid.dataset) + len(test.dataset) == len(dataset.inter_feat)


def test_the_draw_is_seeded(tiny_config):
    def held_out(seed):
        _, (_, _, valid, test) = _split(tiny_config, seed=seed)
        return _items(valid), _items(test)

    assert held_out(1) == held_out(1)
    assert held_out(1) != held_out(2)


def _pairs(loader):
    inter = loader._dataset.inter_feat
    return set(zip(inter["user_id"].numpy().tolist(), inter["item_id"].numpy().tolist()))


def test_each_phase_ranks_only_its_own_held_out_items(tiny_config):
    _, (_, train, valid, test) = _split(tiny_config)
    n_items = train._dataset.item_num
    for loader in (valid, test):
        phase_items = _items(loader)
        assert set(loader.candidate_items.tolist()) == phase_items
        for interaction, excluded, positive_u, positive_i in loader:     # what RecBole's Trainer masks, per batch
            assert excluded.shape == (len(interaction), n_items)
            for row, uid in enumerate(interaction["user_id"].tolist()):
                candidates = set(np.flatnonzero(~excluded[row].numpy()).tolist()) - {0}
                assert candidates == phase_items                      # no held-out item is in a history
                assert set(loader.uid2positive_item[uid].tolist()) <= candidates
            assert excluded[positive_u, positive_i].sum() == 0


def test_exclusion_lists_hold_only_the_real_history(tiny_config):
    # the candidate set is one list of items a phase: a user's excluded history is what they interacted with
    # before the phase (training; for test also validation), not every item outside the phase's held-out ones
    _, (_, train, valid, test) = _split(tiny_config)
    dm = RecBoleDataModule("tiny", model="MVAE", config_dict=dict(tiny_config, **COLD))
    dm.setup()
    for loader, before in ((valid, _pairs(train)), (test, _pairs(train) | _pairs(valid))):
        phase = "valid" if loader is valid else "test"
        history = {(uid, i) for uid in loader.uid_list.tolist() for i in loader.uid2history_item[uid].tolist()}
        assert history == {(u, i) for u, i in before if u in set(loader.uid_list.tolist())}
        split = dm.data.split(phase)
        assert split.exclude.nnz == len(history) < len(loader.uid_list) * len(_items(train))
        assert set(zip(*split.exclude.nonzero())) == history
        assert set(split.candidates.tolist()) == _items(loader)


def test_rank_all_excludes_only_the_users_history(tiny_config):
    _, (_, train, valid, test) = _split(tiny_config, cold_item_rank="all")
    train_users = train._dataset.inter_feat
    history = {}
    for u, i in zip(train_users["user_id"].numpy(), train_users["item_id"].numpy()):
        history.setdefault(int(u), set()).add(int(i))
    for uid in valid.uid_list.tolist():
        assert set(valid.uid2history_item[uid].tolist()) == history.get(uid, set())


def test_warm_protocol_is_recboles_own_split(tiny_config):
    config = make_config("MVAE", "tiny", config_dict=tiny_config)
    assert cold_start.cold_item_settings(config) is None
    from recbole.data import create_dataset
    from recbole.utils import init_seed

    init_seed(config["seed"], config["reproducibility"])
    ours = create_dataset(config).build()
    init_seed(config["seed"], config["reproducibility"])
    recboles = patches.ORIGINAL["recbole.data.dataset.dataset:Dataset.build"](create_dataset(config))
    for a, b in zip(ours, recboles):
        assert (a.inter_feat["item_id"] == b.inter_feat["item_id"]).all()
        assert (a.inter_feat["user_id"] == b.inter_feat["user_id"]).all()


@pytest.mark.parametrize("model, extra", [
    ("MVAE", {}),
    ("SVAE", {"eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "TO", "group_by": "user", "mode": "full"}}),
])
def test_datamodule_and_metrics_see_the_cold_candidates(tiny_config, model, extra):
    # SVAE: its block form (a non-leave-one-out split) reads RecBole's general loaders, as MVAE's data do
    dm = RecBoleDataModule("tiny", model=model, config_dict=dict(tiny_config, **COLD, **extra))
    dm.setup()
    data = dm.data
    for phase in ("valid", "test"):
        split = data.split(phase)
        phase_items = np.flatnonzero(np.asarray(split.positives.sum(axis=0)).ravel() > 0)
        batch = data.rows(split.users[:3], phase)
        ranked = ~batch["exclude"]
        ranked[:, 0] = False
        for row in ranked:   # exactly the phase's held-out items (every one of them has a positive somewhere)
            assert set(np.flatnonzero(row.numpy())) == set(phase_items)
            assert not (row.numpy() & (data.item_counts > 0)).any()   # no training item is ranked


def test_recbole_models_rank_only_held_out_items(tiny_config):
    # RecBole's Pop: the most popular *training* items -- none of which is a candidate under the protocol
    cold = recbole_ext.run_recbole(model="Pop", dataset="tiny", config_dict=dict(tiny_config, **COLD))
    _, (_, train, _, test) = _split(tiny_config)
    n_test_items, n_items = len(_items(test)), train._dataset.item_num
    assert cold["test_result"]["itemcoverage@10"] * n_items <= n_test_items + 1e-6
    assert cold["test_result"]["recall@10"] > 0
    # ranking every item, Pop's lists are warm items only, so no held-out positive is ever hit
    everything = recbole_ext.run_recbole(model="Pop", dataset="tiny",
                                         config_dict=dict(tiny_config, **COLD, cold_item_rank="all"))
    assert everything["test_result"]["recall@10"] == 0.0


def _dense_metrics(model, phase_loader, earlier, topk, train):
    """RecBole's metrics of ``model`` on ``phase_loader``'s users, from a dense score matrix built here: every
    item scored, the padding id, each user's interactions in the ``earlier`` loaders and every item the phase
    did not hold out set to -inf (the protocol's definition, not its code)."""
    positives = _pairs(phase_loader)
    users = sorted({u for u, _ in positives})
    phase_items = _items(phase_loader)
    n_items = train._dataset.item_num
    with torch.no_grad():
        uid = torch.tensor(users)
        scores = model.full_sort_predict(Interaction({"user_id": uid})).view(len(users), n_items).clone()
    row = {u: r for r, u in enumerate(users)}
    for u, i in set().union(*map(_pairs, earlier)):
        if u in row:
            scores[row[u], i] = -torch.inf
    scores[:, [i for i in range(n_items) if i not in phase_items]] = -torch.inf
    target = torch.zeros(len(users), n_items, dtype=torch.bool)
    for u, i in positives:
        target[row[u], i] = True
    metrics = TopKMetrics(n_items, topk, torch.as_tensor(item_counts(train._dataset)),
                          len(train._dataset.user_counter))
    metrics.update(scores, target)
    return {k: float(v) for k, v in metrics.compute().items()}


@pytest.mark.parametrize("model", ["BPR", "Pop"])
def test_recbole_models_get_the_metrics_of_a_dense_computation(tiny_config, model):
    # RecBole's own model through run_recbole (its loaders, Trainer and evaluator, with the candidate set applied
    # to each batch) against the same trained model scored densely here.  BPR's scores have no ties; Pop's
    # candidates all tie at 0 (no held-out item has a training interaction), where torch.topk decides alike.
    cfg = dict(tiny_config, **COLD, epochs=1, metric_decimal_place=12,
               metrics=[*tiny_config["metrics"], "TruncatedRecall"])
    result = recbole_ext.run_recbole(model=model, dataset="tiny", config_dict=cfg)
    _, trained, _, train, valid, test = load_data_and_model(result["saved_model_file"])
    trained.eval()
    topk = cfg["topk"]
    for got, loader, earlier in ((result["best_valid_result"], valid, [train]),
                                 (result["test_result"], test, [train, valid])):
        expected = _dense_metrics(trained, loader, earlier, topk, train)
        assert set(got) == set(expected)
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, abs=1e-9), key
    # RecBole's case study ranks the same candidates
    _, top = full_sort_topk(test.uid_list[:5].numpy(), trained, test, k=10)
    assert set(top.flatten().tolist()) <= _items(test)


@pytest.mark.parametrize("bad, words", [
    ({"cold_item_ratio": 1.5}, "cold_item_ratio=1.5"),
    ({"cold_item_valid_ratio": 0.0}, "cold_item_valid_ratio=0.0"),
    ({"cold_item_rank": "warm"}, "cold_item_rank='warm'"),
    ({"cold_item_split": "yes"}, "cold_item_split='yes'"),
    ({"save_dataloaders": True}, "save_dataloaders"),
])
def test_invalid_settings_are_clear_errors_before_data_loads(tiny_config, bad, words):
    with pytest.raises(ConfigError, match=words):
        make_config("MVAE", "tiny", config_dict={**tiny_config, "cold_item_split": True, **bad})


def test_too_few_items_is_a_clear_error_when_the_split_is_drawn(tiny_config):
    config = make_config("MVAE", "tiny", config_dict=dict(tiny_config, cold_item_split=True, cold_item_ratio=0.01))
    with pytest.raises(ConfigError, match="Raise cold_item_ratio"):
        load_data(config)


def test_default_share_is_a_fifth_of_the_items(tiny_config):
    _, (_, train, valid, test) = _split(tiny_config, cold_item_ratio=None, cold_item_valid_ratio=None)
    n_items = len(_items(train) | _items(valid) | _items(test))
    assert len(_items(valid) | _items(test)) == round(0.2 * n_items)


@pytest.mark.parametrize("model, extra, words", [
    ("GRU4Rec", {"train_neg_sample_args": None}, "sequential model"),
    ("MVAE", {"eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "group_by": "user", "mode": "uni100"}},
     "mode"),
])
def test_models_and_modes_the_protocol_cannot_serve_are_refused(tiny_config, model, extra, words):
    with pytest.raises(ConfigError, match=words):
        make_config(model, "tiny", config_dict=dict(tiny_config, **COLD, **extra))
