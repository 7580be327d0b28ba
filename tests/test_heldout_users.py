"""The held-out user protocol (strong generalisation, Liang et al. 2018): whole users withheld from training,
seeded; each scored from their fold-in alone, which is excluded from ranking; the targets are the positives.
Both entry points, our models and RecBole's history-reading ones, and clear errors for the rest."""
import numpy as np
import pytest
import pytorch_lightning as pl
import scipy.sparse as sp
import torch

import recbole_ext  # noqa: F401  (compat and the protocol's patches before recbole is used)
from recbole.quick_start import run_recbole as recbole_run_recbole
from recbole.utils import get_model, init_seed

from lightning_genrec.errors import ConfigError
from lightning_genrec.metrics import TopKMetrics
from lightning_genrec.models import CFGAN, MODELS, MVAE
from recbole_ext import RecBoleDataModule, heldout_users, run_recbole
from recbole_ext.config import load_data, make_config

from conftest import SMALL, small_config

HELDOUT = {"heldout_user_split": True}
TINY_SVAE = {"train_batch_size": 8}
PAPER_METRICS = {"metrics": ["Recall", "TruncatedRecall", "NDCG", "Precision", "MRR", "Novelty", "ItemCoverage",
                             "GiniIndex"], "metric_decimal_place": 10}


def _split(tiny_config, model="MVAE", **extra):
    config = make_config(model, "tiny", config_dict={**tiny_config, **HELDOUT, **extra})
    return config, load_data(config)


def _pairs(interaction):
    return list(zip(interaction["user_id"].numpy().tolist(), interaction["item_id"].numpy().tolist()))


def _users(loader):
    return set(loader._dataset.inter_feat["user_id"].numpy().tolist())


def _foldin_csr(dataset):
    f = dataset.heldout_foldin
    return sp.csr_matrix((np.ones(len(f)), (f["user_id"].numpy(), f["item_id"].numpy())),
                         shape=(dataset.user_num, dataset.item_num))


# -- the split ------------------------------------------------------------------------------------------------

def test_held_out_users_never_reach_training(tiny_config):
    _, (dataset, train, valid, test) = _split(tiny_config)
    heldout = train._dataset.heldout_users
    valid_users, test_users, train_users = set(heldout["valid"].tolist()), set(heldout["test"].tolist()), _users(train)
    assert _users(valid) == valid_users and _users(test) == test_users
    assert not train_users & valid_users and not train_users & test_users and not valid_users & test_users
    assert len(valid_users) == len(test_users) == round(0.1 * 60) and len(train_users) == 60 - 12
    # every interaction is training, fold-in or target, once
    foldin = _pairs(train._dataset.heldout_foldin)
    everything = _pairs(train._dataset.inter_feat) + foldin + _pairs(valid._dataset.inter_feat) + \
        _pairs(test._dataset.inter_feat)
    assert sorted(everything) == sorted(_pairs(dataset.inter_feat))
    assert {u for u, _ in foldin} == valid_users | test_users
    # 15 interactions a user: 80 % (12) fold-in, 3 targets (Liang et al.: int(0.2 * n) targets)
    per_user = np.bincount([u for u, _ in foldin])
    assert set(per_user[sorted(valid_users | test_users)].tolist()) == {12}
    assert len(valid._dataset) == len(test._dataset) == 6 * 3


def test_the_draw_is_seeded(tiny_config):
    def drawn(seed):
        _, (_, train, _, _) = _split(tiny_config, seed=seed)
        d = train._dataset
        return d.heldout_users["valid"].tolist(), d.heldout_users["test"].tolist(), sorted(_pairs(d.heldout_foldin))

    assert drawn(1) == drawn(1)
    a, b = drawn(1), drawn(2)
    assert a[0] != b[0] and a[2] != b[2]


def test_time_order_folds_in_the_earliest_interactions(tiny_config):
    _, (dataset, train, valid, test) = _split(tiny_config, eval_args={"order": "TO", "mode": "full"})
    inter = dataset.inter_feat
    time = {(u, i): t for u, i, t in zip(inter["user_id"].numpy().tolist(), inter["item_id"].numpy().tolist(),
                                         inter["timestamp"].numpy().tolist())}
    foldin = _pairs(train._dataset.heldout_foldin)
    for loader in (valid, test):
        for u, i in _pairs(loader._dataset.inter_feat):
            assert all(time[(u, i)] > time[(u, j)] for v, j in foldin if v == u)


def _write(tmp_path, name, lines):
    folder = tmp_path / name
    folder.mkdir()
    (folder / f"{name}.inter").write_text("\n".join(["user_id:token\titem_id:token\ttimestamp:float", *lines]) + "\n")
    return str(tmp_path)


def test_a_repeated_item_in_the_fold_in_is_no_target(tmp_path, tiny_config):
    # every user rates 5 items twice and 6 once: a target that repeats a fold-in item would be excluded and
    # unreachable
    lines = [f"u{u}\ti{(u + j) % 12}\t{100 * u + t}" for u in range(40) for t, j in enumerate(list(range(5)) * 2)]
    lines += [f"u{u}\tk{(u + j) % 10}\t{100 * u + 20 + j}" for u in range(40) for j in range(6)]
    config = make_config("MVAE", "dups", config_dict={**tiny_config, **HELDOUT,
                                                      "data_path": _write(tmp_path, "dups", lines)})
    _, train, valid, test = load_data(config)
    foldin = set(_pairs(train._dataset.heldout_foldin))
    assert len(valid._dataset) + len(test._dataset) < 3 * 8        # some of the 3 targets of 8 users were repeats
    for loader in (valid, test):
        pairs = _pairs(loader._dataset.inter_feat)
        assert not set(pairs) & foldin
        for uid in loader.uid_list.tolist():
            assert not set(loader.uid2positive_item[uid].tolist()) & set(loader.uid2history_item[uid].tolist())


def test_items_no_training_user_has_leave_the_held_out_users(tmp_path, tiny_config):
    # 40 users, 10 shared items each; the odd users also one item of their own, mid-file. A held-out user's own
    # item is known to no training user, so (as in Liang et al.'s code) it is neither fold-in nor target
    def lines(own):
        return [f"u{u}\t{own(u)}\t{100 * u + 50}" if j == 10 else f"u{u}\ti{(u + j) % 12}\t{100 * u + j}"
                for u in range(40) for j in ((0, 1, 2, 3, 4, 10, 5, 6, 7, 8, 9) if u % 2 else range(10))]

    def split(name, own):
        config = make_config("MVAE", name, config_dict={**tiny_config, **HELDOUT,
                                                        "data_path": _write(tmp_path, name, lines(own))})
        return load_data(config)

    dataset, train, valid, test = split("own", lambda u: f"own{u}")
    d = train._dataset
    heldout = set(d.heldout_users["valid"].tolist()) | set(d.heldout_users["test"].tolist())
    tokens = dataset.field2id_token["item_id"]
    foldin = _pairs(d.heldout_foldin)
    targets = _pairs(valid._dataset.inter_feat) + _pairs(test._dataset.inter_feat)
    assert not [i for _, i in foldin + targets if tokens[i].startswith("own")]
    assert {u for u, _ in foldin} == heldout
    assert np.bincount([u for u, _ in foldin])[sorted(heldout)].tolist() == [8] * len(heldout)   # 80 % of 10
    assert len(targets) == 2 * len(heldout)
    odd = {u for u in heldout if int(dataset.id2token("user_id", u)[1:]) % 2}
    trained_own = [i for _, i in _pairs(d.inter_feat) if tokens[i].startswith("own")]
    assert odd and len(trained_own) == 20 - len(odd)                              # training users keep theirs
    # the drop draws nothing anew: where the odd users' extra item is a known one instead, the even users
    # fold in the same items
    other, known_train, _, _ = split("known", lambda u: f"i{(u + 10) % 12}")
    def even_foldin(data, pairs):
        named = ((data.id2token("user_id", u), data.id2token("item_id", i)) for u, i in pairs)
        return sorted((u, i) for u, i in named if int(u[1:]) % 2 == 0)
    assert even_foldin(dataset, foldin) == even_foldin(other, _pairs(known_train._dataset.heldout_foldin))
    assert len(even_foldin(dataset, foldin)) == 8 * (len(heldout) - len(odd))


def test_held_out_users_without_a_target_are_counted_and_a_phase_without_any_is_refused(tmp_path, tiny_config,
                                                                                        caplog):
    # half the users have 4 interactions: at heldout_foldin_ratio 0.8 that leaves them no target
    lines = [f"u{u}\ti{(u + j) % 12}\t{100 * u + j}" for u in range(60) for j in range(4 if u % 2 else 10)]
    root = _write(tmp_path, "few", lines)
    config = make_config("MVAE", "few", config_dict={**tiny_config, **HELDOUT, "data_path": root})
    with caplog.at_level("WARNING"):
        _, train, valid, test = load_data(config)
    d = train._dataset
    for phase, loader in (("validation", valid), ("test", test)):
        drawn = d.heldout_users["valid" if phase == "validation" else "test"]
        short = len(drawn) - len(_users(loader))
        assert short > 0 and f"{short} of the {len(drawn)} {phase} users have no target" in caplog.text
    assert 'user_inter_num_interval: "[5,inf)"' in caplog.text
    root = _write(tmp_path, "fewer", [f"u{u}\ti{(u + j) % 12}\t{j}" for u in range(60) for j in range(4)])
    config = make_config("MVAE", "fewer", config_dict={**tiny_config, **HELDOUT, "data_path": root})
    with pytest.raises(ConfigError, match="none of the 6 validation users has a target"):
        load_data(config)


def test_split_foldin_shares():
    users = np.repeat([1, 2, 3, 4], [4, 5, 10, 1])
    key = np.random.default_rng(0).random(len(users))
    foldin = heldout_users.split_foldin(users, key, 0.8)
    counts = {u: (int(foldin[users == u].sum()), int((~foldin[users == u]).sum())) for u in (1, 2, 3, 4)}
    assert counts == {1: (4, 0), 2: (4, 1), 3: (8, 2), 4: (1, 0)}    # targets = floor(0.2 n)
    for u in (2, 3):   # the targets are the largest keys
        assert key[(users == u) & ~foldin].min() > key[(users == u) & foldin].max()


def test_loader_excludes_the_fold_in_and_ranks_the_targets(tiny_config):
    _, (_, train, valid, test) = _split(tiny_config)
    foldin = _foldin_csr(train._dataset)
    for loader in (valid, test):
        targets = {}
        for u, i in _pairs(loader._dataset.inter_feat):
            targets.setdefault(u, set()).add(i)
        for uid in loader.uid_list.tolist():
            assert set(loader.uid2history_item[uid].tolist()) == set(foldin[uid].indices.tolist())
            assert set(loader.uid2positive_item[uid].tolist()) == targets[uid]


# -- scoring from the fold-in ---------------------------------------------------------------------------------

def test_mvae_scores_a_held_out_user_from_the_fold_in(tiny_config):
    dm = RecBoleDataModule("tiny", model="MVAE", config_dict=small_config("MVAE", tiny_config, **HELDOUT))
    dm.setup()
    data = dm.data
    assert data.foldin is not None and data.foldin.nnz == 12 * 12
    model = MVAE(n_items=data.n_items, **SMALL["MVAE"]).eval()
    for phase in ("valid", "test"):
        users = data.split(phase).users
        assert data.train[users].nnz == 0                               # never seen in training
        batch = data.rows(users, phase)
        row = torch.from_numpy(data.foldin[users].toarray())
        assert torch.equal(batch["input"].to_dense(), row)              # the input row is the fold-in (MVAE: by entries)
        assert torch.equal(batch["exclude"], row > 0)                   # ... and it is not ranked
        torch.testing.assert_close(model.score(batch), model.score({"input": row}), rtol=0, atol=0)
    # training rows are the training users' own, without any fold-in
    train_users = data.train_users()
    assert not set(train_users.tolist()) & set(np.flatnonzero(np.diff(data.foldin.indptr)).tolist())
    assert torch.equal(data.rows(train_users)["input"].to_dense(), torch.from_numpy(data.train[train_users].toarray()))


def test_cfgan_user_mode_and_cvae_read_the_fold_in_row(tiny_config):
    # CFGAN (mode: user) conditions G on the row; CVAE solves u from the row (its closed-form user step): both
    # read batch["input"], which the data form fills with the fold-in for held-out users
    for name in ("CFGAN", "CVAE"):
        dm = RecBoleDataModule("tiny", model=name, config_dict=small_config(name, tiny_config, **HELDOUT))
        dm.setup()
        users = dm.data.split("test").users
        assert torch.equal(dm.data.rows(users, "test")["input"], torch.from_numpy(dm.data.foldin[users].toarray()))
    model = CFGAN(n_items=dm.data.n_items, **{**SMALL["CFGAN"], "mode": "user"}).eval()
    batch = dm.data.rows(users, "test")
    torch.testing.assert_close(model.score(batch), model.generator(batch["input"]), rtol=0, atol=0)


def test_cvae_user_step_from_the_fold_in(tiny_config):
    from lightning_genrec.models import CVAE
    from lightning_genrec.models.cvae import fold_in

    dm = RecBoleDataModule("tiny", model="CVAE", config_dict=small_config("CVAE", tiny_config, **HELDOUT))
    dm.setup()
    model = CVAE(n_items=dm.data.n_items, **SMALL["CVAE"])
    model.attach_data(dm.data)
    model.init_factors()
    users = dm.data.split("valid").users
    batch = dm.data.rows(users, "valid")
    V = model.item_factors.double()
    rated = model.rated          # the user step's gram: the items with training interactions
    h = model.hparams
    u = fold_in(torch.from_numpy(dm.data.foldin[users].toarray()).double(), V, V[rated].t() @ V[rated],
                h.confidence_a, h.confidence_b, h.lambda_u, in_gram=rated)
    torch.testing.assert_close(model.score(batch), (u @ V.t()).float())


def test_svae_reads_the_fold_in_as_its_sequence_in_time_order(tiny_config):
    # SVAE's defaults are RecBole's sequential protocol (leave-one-out, time order); under the held-out user
    # protocol it reads the block form, and a held-out user's sequence is their fold-in: the earliest 80 %
    dm = RecBoleDataModule("tiny", model="SVAE", config_dict=small_config("SVAE", tiny_config, **HELDOUT))
    dm.setup()
    data = dm.data
    assert dm.config["eval_args"]["order"] == "TO" and data.form == "block"
    config, (dataset, train, valid, test) = _split(tiny_config, model="SVAE", **TINY_SVAE)
    f = train._dataset.heldout_foldin
    users, items, times = f["user_id"].numpy(), f["item_id"].numpy(), f["timestamp"].numpy()
    for phase, loader in (("valid", valid), ("test", test)):
        split_users = data.split(phase).users
        batch = data.rows(split_users, phase)
        recbole = data.recbole_batch(loader.user_df, "user_id", phase)
        assert torch.equal(batch["seq"], recbole["seq"])
        for row, u in enumerate(split_users):
            mine = np.argsort(times[users == u], kind="stable")
            expected = items[users == u][mine][-data.max_len:]
            assert batch["seq"][row, :batch["length"][row]].tolist() == expected.tolist()
            assert data.train[u].size == 0


def _recbole_model(name, tiny_config, **extra):
    config, (_, train, valid, test) = _split(tiny_config, model=name, **extra)
    init_seed(config["seed"], config["reproducibility"])
    return config, get_model(name)(config, train._dataset), train, valid, test


def _scores(model, users):
    from recbole.data.interaction import Interaction

    out = model.full_sort_predict(Interaction({"user_id": torch.as_tensor(users)}))
    return torch.as_tensor(out).view(len(users), -1).double()


def test_recbole_ease_scores_fold_in_rows_with_b_learned_from_training_users(tiny_config):
    config, model, train, valid, test = _recbole_model("EASE", tiny_config)
    X = train._dataset.inter_matrix(form="csr").astype(np.float64).toarray()     # training users only
    G = X.T @ X + config["reg_weight"] * np.eye(X.shape[1])
    P = np.linalg.inv(G)
    B = P / -np.diag(P)
    np.fill_diagonal(B, 0.0)
    foldin = _foldin_csr(train._dataset)
    for loader in (valid, test):
        users = loader.uid_list.numpy()
        expected = foldin[users].toarray() @ B
        np.testing.assert_allclose(_scores(model, users).numpy(), expected, rtol=1e-4, atol=1e-5)
    # training users keep their own rows
    some = np.array(sorted(_users(train)))[:5]
    np.testing.assert_allclose(_scores(model, some).numpy(), X[some] @ B, rtol=1e-4, atol=1e-5)


def test_recbole_itemknn_multivae_and_multidae_read_the_fold_in(tiny_config):
    _, knn, train, valid, _ = _recbole_model("ItemKNN", tiny_config)
    foldin = _foldin_csr(train._dataset)
    users = valid.uid_list.numpy()
    np.testing.assert_allclose(_scores(knn, users).numpy(), (foldin[users] @ knn.w).toarray(), rtol=1e-6, atol=1e-6)
    for name in ("MultiVAE", "MultiDAE"):
        _, vae, train, valid, _ = _recbole_model(name, tiny_config)
        rows = vae.get_rating_matrix(torch.as_tensor(users))
        np.testing.assert_array_equal(rows.numpy(), foldin[users].toarray())


@pytest.mark.parametrize("name", ["MultiVAE", "MultiDAE"])
def test_recbole_autoencoders_never_train_on_the_fold_in(tiny_config, name, monkeypatch):
    # RecBole's training loader for them visits every user id; what calculate_loss reads for a held-out
    # user must be an empty row (their fold-in is only for scoring), and scoring still reads the fold-in
    _, vae, train, valid, _ = _recbole_model(name, tiny_config)
    foldin = _foldin_csr(train._dataset)
    held_out = valid.uid_list.numpy()
    trained = train._dataset.inter_matrix(form="csr")
    seen = []
    original = type(vae).get_rating_matrix

    def recorded(self, user):
        rows = original(self, user)
        seen.append((user.numpy().copy(), rows.numpy().copy()))
        return rows

    monkeypatch.setattr(type(vae), "get_rating_matrix", recorded)
    users = np.concatenate([held_out, np.flatnonzero(trained.getnnz(axis=1))[:5]])
    vae.calculate_loss({vae.USER_ID: torch.as_tensor(users)})
    (asked, rows), = seen
    np.testing.assert_array_equal(rows, (trained[asked] > 0).toarray().astype(np.float32))
    assert rows[:len(held_out)].sum() == 0 and foldin[held_out].sum() > 0
    scored = vae.get_rating_matrix(torch.as_tensor(held_out))     # the fold-in is back for scoring
    np.testing.assert_array_equal(scored.numpy(), foldin[held_out].toarray())


# -- both entry points, same numbers ----------------------------------------------------------------------------

def _assert_same_test_metrics(result, model, datamodule, tol=1e-6):
    state = torch.load(result["saved_model_file"], weights_only=False)["state_dict"]
    model.load_state_dict({k[len("module."):]: v for k, v in state.items()})
    out = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False).test(model, datamodule=datamodule,
                                                                                      verbose=False)[0]
    assert len(result["test_result"]) == 8 * len(datamodule.config["topk"])
    for key, value in result["test_result"].items():
        assert out[f"test/{key}"] == pytest.approx(float(value), abs=tol), key


@pytest.mark.parametrize("name, extra", [("MVAE", {}), ("CFGAN", {"mode": "user"}), ("CVAE", {}), ("SVAE", {})])
def test_both_entry_points_give_the_same_test_metrics(tiny_config, name, extra):
    cd = small_config(name, tiny_config, **HELDOUT, **PAPER_METRICS, **extra, epochs=2)
    result = run_recbole(model=name, dataset="tiny", config_dict=cd)
    assert "truncatedrecall@10" in result["test_result"] and result["test_result"]["ndcg@10"] > 0
    dm = RecBoleDataModule("tiny", model=name, config_dict=cd)
    model = MODELS[name](n_items=None, **{**SMALL[name], **extra})
    dm.setup()
    model.attach_data(dm.data)
    _assert_same_test_metrics(result, model, dm)


def test_recbole_ease_metrics_equal_our_metrics_on_fold_in_scores(tiny_config):
    cd = dict(tiny_config, **HELDOUT, **PAPER_METRICS, valid_metric="NDCG@10")
    result = recbole_run_recbole(model="EASE", dataset="tiny", config_dict=cd)   # RecBole's own entry point
    config, model, train, valid, test = _recbole_model("EASE", tiny_config, **PAPER_METRICS)
    dm = RecBoleDataModule("tiny", model="MVAE", config_dict=small_config("MVAE", tiny_config, **HELDOUT))
    dm.setup()
    data = dm.data
    split = data.split("test")
    metrics = TopKMetrics(data.n_items, config["topk"], torch.as_tensor(data.item_counts), data.n_train_users)
    batch = data.rows(split.users, "test")
    scores = _scores(model, split.users).float().masked_fill(batch["exclude"], -np.inf)
    scores[:, 0] = -np.inf
    metrics.update(scores, batch["target"])
    got = {k: float(v) for k, v in metrics.compute().items()}
    for key, value in result["test_result"].items():
        assert got[key] == pytest.approx(float(value), abs=1e-6), key


# -- bad input ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad, message", [
    ({"heldout_user_valid_ratio": 0.0}, "heldout_user_valid_ratio"),
    ({"heldout_user_test_ratio": 1.5}, "heldout_user_test_ratio"),
    ({"heldout_foldin_ratio": 1.0}, "heldout_foldin_ratio"),
    ({"heldout_user_valid_ratio": 0.5, "heldout_user_test_ratio": 0.5}, "leave no training users"),
    ({"cold_item_split": True}, "cold_item_split"),
    ({"eval_args": {"mode": "uni100"}}, "mode"),
    ({"benchmark_filename": ["train", "valid", "test"]}, "benchmark_filename"),
    ({"test_input": "train_valid"}, "test_input"),
])
def test_bad_settings_are_refused_before_data_loads(tiny_config, bad, message):
    with pytest.raises(ConfigError, match=message):
        make_config("MVAE", "tiny", config_dict={**tiny_config, **HELDOUT, **bad})


@pytest.mark.parametrize("model, extra, message", [
    ("BPR", {}, "BPR cannot score users it was not trained on"),
    ("NeuMF", {}, "NeuMF cannot score"),
    ("ItemKNN", {"knn_method": "user"}, "knn_method: item"),
    ("LARA", {}, "LARA generates users for new items"),
    ("CFGAN", {"mode": "item"}, "mode: user"),
    ("GRU4Rec", {"train_neg_sample_args": None}, "sequential model"),
])
def test_models_that_cannot_score_a_new_user_are_refused(tiny_config, model, extra, message):
    with pytest.raises(ConfigError, match=message) as info:
        make_config(model, "tiny", config_dict={**tiny_config, **HELDOUT, **extra})
    assert "heldout_user_split" in str(info.value)


def test_recboles_own_entry_point_refuses_before_data_loads(tiny_config, monkeypatch):
    import recbole.quick_start.quick_start as qs

    monkeypatch.setattr(qs, "create_dataset", lambda config: pytest.fail("data loaded"))
    with pytest.raises(ConfigError, match="BPR cannot score"):
        recbole_run_recbole(model="BPR", dataset="tiny", config_dict={**tiny_config, **HELDOUT})


def test_item_metrics_are_refused(tiny_config):
    with pytest.raises(ConfigError, match="item_metrics: false"):
        make_config("MVAE", "tiny", config_dict={**tiny_config, **HELDOUT, "item_metrics": True})


def test_too_few_users_for_a_part(tiny_config):
    with pytest.raises(ConfigError, match="0 validation"):
        _split(tiny_config, heldout_user_valid_ratio=0.001)


def test_off_by_default_keeps_recboles_split(tiny_config):
    config = make_config("MVAE", "tiny", config_dict=tiny_config)
    assert heldout_users.heldout_user_settings(config) is None
    _, train, valid, _ = load_data(config)
    assert getattr(train._dataset, "heldout_foldin", None) is None
    assert _users(valid) <= _users(train)
