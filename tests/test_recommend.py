"""Recommendations from a saved model (recbole_ext.recommend, ``recommend`` on the command line), and
RecBole's own load_data_and_model + full_sort_topk on our models."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import FAST, SMALL, TINY_SETTINGS, write_tiny_dataset

import recbole_ext
from lightning_genrec.errors import RecommendError
from recbole_ext.__main__ import main
from recbole_ext.recommend import Recommender, read_titles

#: the checkpoints trained once for this module: name -> (model, extra settings)
RUNS = {"MVAE": ("MVAE", {}), "SVAE": ("SVAE", {}), "CVAE": ("CVAE", {}), "CFGAN": ("CFGAN", {"mode": "user"}),
        "CFGAN-item": ("CFGAN", {"mode": "item"}), "LARA": ("LARA", {"cold_item_split": False})}
FOLD_IN = ["MVAE", "SVAE", "CVAE", "CFGAN", "LARA"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """name -> (checkpoint file, data folder) of each run, trained briefly on the tiny data set."""
    work = tmp_path_factory.mktemp("recommend")
    root = str(write_tiny_dataset(str(work)))
    cwd = os.getcwd()
    os.chdir(work)
    try:
        out = {}
        for name, (model, extra) in RUNS.items():
            cfg = {**FAST, "data_path": root, "epochs": 2, "eval_batch_size": 700, "train_batch_size": 16,
                   "valid_metric": "NDCG@10", **SMALL[model], **TINY_SETTINGS.get(model, {}), **extra,
                   "checkpoint_dir": f"saved/{name}"}    # RecBole names files <model>-<time to the second>
            cfg.pop("cold_item_ratio", None)
            if model == "LARA":
                cfg["valid_metric"] = "NDCG@10"
            result = recbole_ext.run_recbole(model=model, dataset="tiny", config_dict=cfg)
            out[name] = os.path.join(str(work), result["saved_model_file"])
        return out, root
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="module")
def recommenders(saved):
    return {name: Recommender(path) for name, path in saved[0].items()}


def _raw_history(root) -> dict[str, list[str]]:
    """user -> items in time order, from the tiny .inter file itself."""
    frame = pd.read_csv(os.path.join(root, "tiny", "tiny.inter"), sep="\t", dtype=str)
    frame.columns = [c.split(":")[0] for c in frame.columns]
    frame = frame.sort_values(["user_id", "timestamp"], key=lambda c: c.astype(float) if c.name == "timestamp" else c)
    return frame.groupby("user_id")["item_id"].apply(list).to_dict()


# -- RecBole's own case study ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(RUNS))
def test_recbole_load_data_and_model_and_full_sort_topk_work_with_our_models(saved, recommenders, name):
    from recbole.quick_start import load_data_and_model
    from recbole.utils.case_study import full_sort_scores, full_sort_topk

    config, model, dataset, train, valid, test = load_data_and_model(saved[0][name])
    users = test.uid_list[:4].numpy() if hasattr(test, "uid_list") else np.unique(
        test.dataset.inter_feat[dataset.uid_field].numpy())[:4]
    values, top = full_sort_topk(users, model, test, k=5, device=config["device"])
    assert top.shape == (4, 5) and torch.isfinite(values).all()
    if test.is_sequential:
        return
    # no history RecBole excludes comes back, and the scores are the ones Recommender computes from the same
    # rows (training rows: what the test split is scored from)
    for row, u in enumerate(users):
        assert not set(top[row].tolist()) & set(test.uid2history_item[u].tolist())
    ours = recommenders[name].item_scores(dataset.id2token(dataset.uid_field, users), history="train")
    theirs = full_sort_scores(users, model, test, device=config["device"])
    keep = torch.isfinite(theirs)
    torch.testing.assert_close(ours[keep], theirs[keep].float(), rtol=1e-5, atol=1e-6)


# -- users of the data set -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(RUNS))
def test_top_items_are_ranked_unseen_items_with_external_ids(saved, recommenders, name):
    rec = recommenders[name]
    history = _raw_history(saved[1])
    table = rec.top_items(["u3", "u10"], k=7)
    assert list(table.columns) == ["user", "rank", "item", "score"]           # the tiny data set has no titles
    for user, rows in table.groupby("user"):
        assert list(rows["rank"]) == list(range(1, 8))
        assert (np.diff(rows["score"].to_numpy()) <= 1e-6).all()              # best first
        assert not set(rows["item"]) & set(history[user])                     # seen items excluded
        assert set(rows["item"]) <= {f"i{i}" for i in range(80)}
    # the same list as ranking the raw scores by hand
    scores = rec.item_scores(["u3"]).clone()
    scores[0, 0] = -np.inf
    seen = rec.dataset.token2id(rec.iid_field, history["u3"])
    scores[0, torch.as_tensor(seen)] = -np.inf
    best = rec.dataset.id2token(rec.iid_field, torch.topk(scores[0], 7).indices.numpy())
    assert list(table[table.user == "u3"]["item"]) == list(best)


def test_seen_items_come_back_when_asked_and_a_trained_model_ranks_them_high(recommenders, saved):
    rec = recommenders["MVAE"]
    history = _raw_history(saved[1])["u3"]
    with_seen = rec.top_items("u3", k=10, exclude_seen=False)
    assert set(with_seen["item"]) & set(history)


def test_train_history_differs_from_all_history_only_by_the_held_out_interactions(recommenders, saved):
    rec = recommenders["MVAE"]
    all_items = set(_raw_history(saved[1])["u3"])
    train_seen = set(rec.dataset.id2token(rec.iid_field, rec._history("train")[rec.dataset.token2id("user_id", "u3")]))
    assert train_seen < all_items
    table = rec.top_items("u3", k=60, history="train")
    assert not set(table["item"]) & train_seen
    assert set(table["item"]) & (all_items - train_seen)          # held-out items can be recommended


# -- guests -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", FOLD_IN)
def test_a_guest_with_a_users_history_gets_that_users_list(saved, recommenders, name):
    rec = recommenders[name]
    history = _raw_history(saved[1])["u5"]
    user = rec.top_items("u5", k=10)
    guest = rec.for_guest(items=history, k=10)
    assert list(guest["user"].unique()) == ["guest"]
    np.testing.assert_allclose(guest["score"], user["score"], rtol=1e-4, atol=1e-6)
    assert list(guest["item"]) == list(user["item"])


def test_a_guest_naming_genres_is_scored_from_their_most_interacted_items(recommenders):
    rec = recommenders["MVAE"]
    chosen = rec._items_with("class", ["Horror"], per_token=3)
    tokens = rec.dataset.id2token(rec.iid_field, chosen)
    # tiny.item: item i carries genres[i*4//80] and genres[(i+1)%4]; Horror is genres[3]
    carriers = [i for i in range(80) if 3 in (i * 4 // 80, (i + 1) % 4)]
    counts = np.asarray(rec.data.item_counts)
    ids = rec.dataset.token2id(rec.iid_field, [f"i{i}" for i in carriers])
    top3 = sorted(counts[ids], reverse=True)[:3]
    assert all(t in {f"i{i}" for i in carriers} for t in tokens) and len(tokens) == 3
    assert sorted(counts[chosen], reverse=True) == top3
    table = rec.for_guest(tokens={"class": ["Horror"]}, k=5, per_token=3)
    assert not set(table["item"]) & set(tokens)
    assert rec.for_guest(tokens={"class": "Horror"}, k=5, per_token=3)["item"].tolist() == table["item"].tolist()


def test_cfgan_in_item_mode_cannot_fold_in_a_guest(recommenders):
    with pytest.raises(RecommendError, match="CFGAN in item mode .* mode: user"):
        recommenders["CFGAN-item"].for_guest(items=["i1"])


# -- new items ------------------------------------------------------------------------------------------

def test_lara_ranks_users_for_a_new_item_as_for_a_known_item_with_the_same_attributes(recommenders):
    rec = recommenders["LARA"]
    # i0 carries Action and Comedy (tiny.item: genres[i*4//80], genres[(i+1)%4]); LARA scores from attributes alone
    table = rec.users_for_new_item({"class": ["Action", "Comedy"]}, k=8, history="train")
    item = rec.dataset.token2id(rec.iid_field, ["i0"])
    expected = rec.module.item_user_scores(item, "valid")[0].detach()                 # training rows' attribute counts
    expected[0] = -np.inf
    top = torch.topk(expected, 8)
    np.testing.assert_allclose(table["score"], top.values.numpy(), rtol=1e-5)
    assert list(table["rank"]) == list(range(1, 9))
    assert set(table["user"]) <= {f"u{u}" for u in range(60)}


def test_cvae_ranks_users_for_a_new_item_by_its_contents_inference_mean(recommenders):
    rec = recommenders["CVAE"]
    table = rec.users_for_new_item({"class": "Action Comedy"}, k=6, history="train")
    item = int(rec.dataset.token2id(rec.iid_field, "i0"))
    theta = rec.module.item_means()[item]
    users = np.arange(1, rec.dataset.user_num)
    rows = torch.from_numpy(rec._matrix([rec._history("train")[u] for u in users]).toarray())
    expected = (rec.module.user_factors(rows) @ theta).float()
    top = torch.topk(expected, 6)
    np.testing.assert_allclose(table["score"], top.values.numpy(), rtol=1e-5)
    assert list(table["user"]) == list(rec.dataset.id2token(rec.uid_field, users[top.indices.numpy()]))


# -- bad requests ---------------------------------------------------------------------------------------

def test_bad_requests_are_clear_errors_that_name_the_problem(recommenders):
    mvae, lara = recommenders["MVAE"], recommenders["LARA"]
    with pytest.raises(RecommendError, match="user ids not in tiny: nobody, u999"):
        mvae.top_items(["u1", "nobody", "u999"])
    with pytest.raises(RecommendError, match="item ids not in tiny: i999"):
        mvae.for_guest(items=["i1", "i999"])
    with pytest.raises(RecommendError, match="carries class Horrror .*Horror"):
        mvae.for_guest(tokens={"class": ["Horrror"]})
    with pytest.raises(RecommendError, match="no field 'genre' .*class"):
        mvae.for_guest(tokens={"genre": ["Horror"]})
    with pytest.raises(RecommendError, match="MVAE has no way to describe a new item"):
        mvae.users_for_new_item({"class": ["Action"]})
    with pytest.raises(RecommendError, match="class=Actoin"):
        lara.users_for_new_item({"class": ["Actoin"]})
    with pytest.raises(RecommendError, match="trained without title"):
        lara.users_for_new_item({"title": "x"})
    with pytest.raises(RecommendError, match="per_token must be a positive"):
        mvae.for_guest(tokens={"class": ["Horror"]}, per_token=0)
    with pytest.raises(RecommendError, match="k must be a positive"):
        mvae.top_items("u1", k=0)
    with pytest.raises(RecommendError, match="history must be one of all, train"):
        mvae.top_items("u1", history="valid")
    # unknown tokens can be dropped on request, but not all of them
    assert len(lara.users_for_new_item({"class": ["Actoin", "Comedy"]}, k=3, unknown="ignore")) == 3
    with pytest.raises(RecommendError, match="none of the given features"):
        lara.users_for_new_item({"class": ["Actoin"]}, unknown="ignore")


# -- the command line -----------------------------------------------------------------------------------

def test_command_line_prints_the_table_and_writes_csv(saved, capsys, tmp_path):
    out_csv = tmp_path / "top.csv"
    assert main(["recommend", "--checkpoint", saved[0]["MVAE"], "--users", "u1", "u2", "--k", "4",
                 "--csv", str(out_csv)]) == 0
    printed = capsys.readouterr().out
    table = pd.read_csv(out_csv, dtype={"user": str, "item": str})
    assert len(table) == 8 and set(table["user"]) == {"u1", "u2"}
    assert all(item in printed for item in table["item"])
    assert main(["recommend", "--checkpoint", saved[0]["LARA"], "--new_item", "class=Action,Comedy", "--k", "3"]) == 0
    assert "rank" in capsys.readouterr().out
    assert main(["recommend", "--checkpoint", saved[0]["MVAE"], "--liked_items", "i1", "i2",
                 "--liked_tokens", "class=Drama", "--k", "3"]) == 0
    assert "guest" in capsys.readouterr().out


def test_command_line_errors_are_one_line(saved, capsys):
    assert main(["recommend", "--checkpoint", saved[0]["MVAE"], "--users", "ghost"]) == 2
    err = capsys.readouterr().err
    assert "user ids not in tiny: ghost" in err and "Traceback" not in err and err.count("\n") == 1
    assert main(["recommend", "--checkpoint", "missing.pth", "--users", "u1"]) == 2
    assert "missing.pth not found" in capsys.readouterr().err
    assert main(["recommend", "--checkpoint", saved[0]["MVAE"], "--liked_tokens", "Drama"]) == 2
    assert "field=value" in capsys.readouterr().err
    with pytest.raises(SystemExit):          # argparse: ask exactly one thing
        main(["recommend", "--checkpoint", saved[0]["MVAE"]])


def test_titles_come_from_the_item_file():
    from recbole_ext.config import make_config

    config = make_config("MVAE", "ml-100k", config_dict=dict(FAST))
    titles = read_titles(config)
    assert titles["1"] == "Toy Story" and titles["50"] == "Star Wars" and len(titles) == 1682


def test_titles_join_the_items_where_the_data_set_has_them(saved):
    rec = Recommender(saved[0]["MVAE"])
    rec._titles = {f"i{i}": f"Film {i}" for i in range(80)}      # as read_titles gives them for ml-100k
    table = rec.top_items("u1", k=3)
    assert list(table.columns) == ["user", "rank", "item", "score", "title"]
    assert all(title == f"Film {item[1:]}" for item, title in zip(table["item"], table["title"]))
