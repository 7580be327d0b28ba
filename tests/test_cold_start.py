"""The cold-start item protocol: whole items held out, seeded, ranked alone; warm splits untouched."""
import numpy as np
import pytest

import recbole_ext
from recbole_ext import RecBoleDataModule
from recbole_ext import cold_start
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


def test_each_phase_ranks_only_its_own_held_out_items(tiny_config):
    _, (_, train, valid, test) = _split(tiny_config)
    n_items = train._dataset.item_num
    for loader in (valid, test):
        phase_items = _items(loader)
        for uid in loader.uid_list.tolist():
            excluded = set(loader.uid2history_item[uid].tolist())
            candidates = set(range(1, n_items)) - excluded
            assert candidates == phase_items
            assert set(loader.uid2positive_item[uid].tolist()) <= candidates


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
    recboles = cold_start._RECBOLE_BUILD(create_dataset(config))
    for a, b in zip(ours, recboles):
        assert (a.inter_feat["item_id"] == b.inter_feat["item_id"]).all()
        assert (a.inter_feat["user_id"] == b.inter_feat["user_id"]).all()


def test_datamodule_and_metrics_see_the_cold_candidates(tiny_config):
    dm = RecBoleDataModule("tiny", model="MVAE", config_dict=dict(tiny_config, **COLD))
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
