"""The cold-start item protocol: whole items held out, seeded, ranked alone; warm splits untouched."""
import numpy as np
import pytest

import recbole_ext
from lightning_genrec import RecBoleDataModule
from recbole_ext import cold_start
from recbole_ext.config import ConfigError, load_data, make_config

COLD = {"cold_item_ratio": 0.3, "cold_item_valid_ratio": 0.5}


def _split(tiny_config, model="MVAE", **extra):
    config = make_config(model, "tiny", config_dict=dict(tiny_config, **COLD, **extra))
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
    tables = dm.tables
    for phase in ("valid", "test"):
        split = tables.split(phase)
        phase_items = np.flatnonzero(np.asarray(split.positives.sum(axis=0)).ravel() > 0)
        batch = tables.rows(split.users[:3], phase)
        ranked = ~batch["exclude"]
        ranked[:, 0] = False
        for row in ranked:
            assert set(np.flatnonzero(row.numpy())) <= set(range(1, tables.n_items))
            assert set(phase_items) <= set(np.flatnonzero(row.numpy()))
            assert not (row.numpy() & (tables.item_counts > 0)).any()   # no training item is ranked


def test_recbole_models_run_on_the_protocol(tiny_config):
    result = recbole_ext.run_recbole(model="Pop", dataset="tiny", config_dict=dict(tiny_config, **COLD))
    # Pop has no signal on never-seen items: every candidate scores 0
    assert 0.0 <= result["test_result"]["ndcg@10"] <= 1.0


@pytest.mark.parametrize("bad, words", [
    ({"cold_item_ratio": 1.5}, "cold_item_ratio=1.5"),
    ({"cold_item_ratio": 0.2, "cold_item_valid_ratio": 0.0}, "cold_item_valid_ratio=0.0"),
    ({"cold_item_ratio": 0.2, "cold_item_rank": "warm"}, "cold_item_rank='warm'"),
    ({"cold_item_ratio": 0.01}, "Raise cold_item_ratio"),
])
def test_invalid_settings_are_clear_errors(tiny_config, bad, words):
    with pytest.raises(ConfigError, match=words.replace("(", r"\(")):
        config = make_config("MVAE", "tiny", config_dict=dict(tiny_config, **bad))
        load_data(config)


def test_sequential_models_are_refused(tiny_config):
    with pytest.raises(ConfigError, match="sequential"):
        make_config("GRU4Rec", "tiny", config_dict=dict(tiny_config, **COLD, train_neg_sample_args=None))
