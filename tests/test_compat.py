"""One test per item of shared/RECBOLE_NOTES.md, plus the no-download and data_path fixes."""
import glob
import importlib
import os
import pickle
import time

import numpy as np
import pytest
import torch

from recbole_ext import compat, patches
from lightning_genrec.errors import DatasetNotFoundError

from conftest import FAST


def test_item1_and_2_quick_start_imports_with_ray():
    # item 1: needs setuptools<81 (pkg_resources); item 2: np.bool8 for ray.tune
    import pkg_resources  # noqa: F401  (ray 2.6.3 needs it)

    qs = importlib.import_module("recbole.quick_start")
    assert callable(qs.run_recbole)
    assert np.bool8 is np.bool_


def test_item3_config_builds_on_numpy2():
    from recbole.config import Config

    assert np.float_ is np.float64 and np.unicode_ is np.str_
    config = Config(model="Pop", dataset="ml-100k", config_dict=FAST)
    assert config["model"] == "Pop"


def test_item4_5_refuses_pandas3(monkeypatch):
    monkeypatch.setattr(compat.importlib.metadata, "version", lambda name: "3.0.0")
    with pytest.raises(ImportError, match="pandas<3"):
        compat.check_environment()


def test_item4_token_seq_genres_load(ml100k):
    from recbole.data import create_dataset
    from recbole_ext.config import make_config

    config = make_config("Pop", "ml-100k", config_dict=dict(
        FAST, load_col={"inter": ["user_id", "item_id"], "item": ["item_id", "class", "movie_title"]}))
    dataset = create_dataset(config)
    genres = dataset.item_feat["class"]                   # one array of genre ids per item; row 0 = padding
    assert len(genres) == dataset.item_num == 1683
    assert all(len(g) >= 1 and (np.asarray(g) > 0).all() for g in genres[1:])  # every item has its genres
    assert len(dataset.field2id_token["class"]) == 19 + 1  # 19 genres + padding


def test_item6_recbole_checkpoint_loads_back():
    from recbole.quick_start import load_data_and_model, run_recbole

    result = run_recbole(model="Pop", dataset="ml-100k",
                         config_dict=dict(FAST, epochs=1, topk=[10], metrics=["NDCG"], valid_metric="NDCG@10"))
    assert result["test_result"]["ndcg@10"] > 0   # evaluate(load_best_model=True) read the checkpoint
    path = sorted(glob.glob("saved/Pop-*.pth"))[-1]
    config, model, *_ = load_data_and_model(path)
    assert type(model).__name__ == "Pop"
    # torch's safe default is untouched outside RecBole's trainer / quick start
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)


def test_item7_itemcoverage_and_gini_work():
    from recbole.quick_start import run_recbole

    result = run_recbole(model="Pop", dataset="ml-100k", config_dict=dict(
        FAST, epochs=1, topk=[10], metrics=["NDCG", "ItemCoverage", "GiniIndex", "Novelty"],
        valid_metric="NDCG@10"), saved=False)
    test = result["test_result"]
    # Pop recommends nearly the same 10 items to everyone
    assert 0 < test["itemcoverage@10"] < 0.05
    assert 0.95 < test["giniindex@10"] < 1
    assert test["novelty@10"] > 0


def test_missing_dataset_fails_fast_instead_of_downloading(tmp_path):
    from recbole.config import Config
    from recbole.data import create_dataset

    config = Config(model="Pop", dataset="no-such-data", config_dict=dict(FAST, data_path=str(tmp_path)))
    start = time.perf_counter()
    with pytest.raises(DatasetNotFoundError, match="no-such-data"):
        create_dataset(config)
    assert time.perf_counter() - start < 5


def test_data_path_for_ml100k_as_recbole_unless_it_holds_one(tmp_path):
    # RecBole reads ml-100k from its wheel whatever data_path says; a data_path holding an ml-100k is used
    from recbole.config import Config

    default = Config(model="Pop", dataset="ml-100k", config_dict=FAST)
    shipped = default["data_path"]
    assert os.path.isfile(os.path.join(shipped, "ml-100k.inter"))
    elsewhere = Config(model="Pop", dataset="ml-100k", config_dict=dict(FAST, data_path=str(tmp_path)))
    assert elsewhere["data_path"] == shipped                       # RecBole's test_data_path relies on this
    (tmp_path / "ml-100k").mkdir()
    mine = Config(model="Pop", dataset="ml-100k", config_dict=dict(FAST, data_path=str(tmp_path)))
    assert mine["data_path"] == os.path.join(str(tmp_path), "ml-100k")


def test_apply_is_idempotent():
    from recbole.evaluator.collector import Collector

    before = Collector.get_data_struct
    patches.apply()
    patches.install("collector")
    assert Collector.get_data_struct is before


def test_item9_ensure_dir_survives_a_process_creating_the_folder_first(tmp_path, monkeypatch):
    import recbole.utils.logger
    import recbole.trainer.trainer

    folder = tmp_path / "log"
    folder.mkdir()
    # another process created it between RecBole's existence check and its makedirs
    monkeypatch.setattr(os.path, "exists", lambda path: False)
    for module in (recbole.utils.logger, recbole.trainer.trainer):
        module.ensure_dir(str(folder))       # RecBole's own raised FileExistsError here


def test_item10_evaluation_batches_are_joined_once_when_read():
    import torch
    from recbole.evaluator.collector import DataStruct

    struct = DataStruct()
    batches = [torch.arange(6).view(3, 2) + 10 * k for k in range(4)]
    for b in batches:
        struct.update_tensor("rec.topk", b)
    assert isinstance(struct._data_dict["rec.topk"], list)          # not re-concatenated batch after batch
    assert torch.equal(struct.get("rec.topk"), torch.cat(batches))
    struct.update_tensor("rec.topk", batches[0])                       # collecting again after a read
    assert torch.equal(struct["rec.topk"], torch.cat(batches + batches[:1]))
    struct.set("data.num_items", 7)
    with pytest.raises(ValueError, match="not a tensor"):
        struct.update_tensor("data.num_items", batches[0])


# item 11
def test_exhaustive_search_tries_every_point_once_with_todays_hyperopt():
    # RecBole's own exhaustive search hands hyperopt a RandomState and fails on the first trial
    from hyperopt import Trials, fmin, hp

    import recbole.trainer.hyper_tuning as hyper_tuning

    space = {"a": hp.choice("a", [1, 2, 3]), "b": hp.choice("b", ["x", "y"])}
    seen = []
    trials = Trials()
    fmin(lambda p: seen.append((p["a"], p["b"])) or 0.0, space, algo=hyper_tuning.exhaustive_search,
         max_evals=20, trials=trials, show_progressbar=False)
    assert sorted(seen) == sorted((a, b) for a in (1, 2, 3) for b in ("x", "y"))


def test_item12_time_order_is_exact_with_unix_seconds(tmp_path):
    """Two interactions 10 s apart at 1.7e9 s tie in float32; RecBole's time-ordered split must still
    put the later one last (file order is the reverse of time order here)."""
    from recbole.data import create_dataset
    from recbole_ext.config import make_config

    folder = tmp_path / "raw-times"
    folder.mkdir()
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    t0 = 1_700_000_000
    for user in range(1, 21):
        items = [(user * 7 + k) % 50 + 1 for k in range(6)]
        stamps = [t0 + 3600 * k for k in range(4)] + [t0 + 3600 * 5 + 10, t0 + 3600 * 5]   # the last two swapped
        lines += [f"{user}\t{i}\t{t}" for i, t in zip(items, stamps)]
    (folder / "raw-times.inter").write_text("\n".join(lines) + "\n")
    assert np.float32(t0 + 3600 * 5 + 10) == np.float32(t0 + 3600 * 5)         # the tie this fix is about
    config = make_config("Pop", "raw-times", config_dict=dict(
        FAST, data_path=str(tmp_path), eval_args={"order": "TO", "split": {"LS": "valid_and_test"}, "mode": "full",
                                                  "group_by": "user"}, metrics=["NDCG"], topk=[5],
        valid_metric="NDCG@5", load_col={"inter": ["user_id", "item_id", "timestamp"]}))
    dataset = create_dataset(config)
    train, valid, test = dataset.build()
    times = test.inter_feat["timestamp"]
    assert times.dtype == torch.float64 and int(times.max()) == t0 + 3600 * 5 + 10
    tokens = dataset.field2id_token
    for user, item in zip(test.inter_feat["user_id"].tolist(), test.inter_feat["item_id"].tolist()):
        u = int(tokens["user_id"][user])
        assert int(tokens["item_id"][item]) == (u * 7 + 4) % 50 + 1                 # the latest, not the last line
    assert len(test.inter_feat) == 20


def test_item12_leaves_a_time_field_read_as_a_numerical_feature_to_recbole(tmp_path):
    """With ``numerical_features: [timestamp]`` RecBole turns the column into [value, 1] pairs for its
    context-aware models, which multiply it with float32 weights: it stays RecBole's float32 pair."""
    from recbole.data import create_dataset
    from recbole_ext.config import make_config

    folder = tmp_path / "num-time"
    folder.mkdir()
    lines = ["user_id:token\titem_id:token\tlabel:float\ttimestamp:float"]
    lines += [f"{u}\t{(u * 3 + k) % 20 + 1}\t{k % 2}\t{1_700_000_000 + 60 * k}" for u in range(1, 31) for k in range(8)]
    (folder / "num-time.inter").write_text("\n".join(lines) + "\n")
    config = make_config("FM", "num-time", config_dict=dict(
        FAST, data_path=str(tmp_path), numerical_features=["timestamp"], metrics=["AUC"], valid_metric="AUC",
        eval_args={"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "mode": "labeled", "group_by": None},
        load_col={"inter": ["user_id", "item_id", "label", "timestamp"]}))
    train, _, _ = create_dataset(config).build()
    times = train.inter_feat["timestamp"]
    assert times.dtype == torch.float32 and times.shape == (len(train.inter_feat), 2)


@pytest.mark.parametrize("name", ["LightGCN", "NGCF", "SpectralCF", "GCMC"])
def test_recbole_graph_models_build_and_train_on_todays_scipy(tiny_config, name):
    # RecBole #2034: the graph models build their adjacency with dok_matrix._update, which scipy 1.13 removed;
    # the whole graph must be there (every training pair, both directions) and a step must learn
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, init_seed

    config = Config(model=name, dataset="tiny", config_dict=dict(tiny_config, epochs=1))
    init_seed(config["seed"], config["reproducibility"])
    train, _, _ = data_preparation(config, create_dataset(config))
    model = get_model(name)(config, train._dataset)
    pairs = train._dataset.inter_matrix(form="coo").nnz
    graph = getattr(model, "get_laplacian_matrix" if name == "SpectralCF" else "get_norm_adj_mat")()
    parts = graph if isinstance(graph, (list, tuple)) else [graph]
    edges = sum(int(g.coalesce().indices().shape[1]) for g in parts)
    assert edges >= 2 * pairs    # both directions of every training pair (SpectralCF adds the identity)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    before = [p.detach().clone() for p in model.parameters()]
    loss = model.calculate_loss(next(iter(train)).to(config["device"]))
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
