"""CVAE: the paper's content VAE, exact ALS closed forms, content from RecBole item fields, both entry points."""
import os

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

import recbole_ext
from lightning_genrec import CVAE
from recbole_ext import RecBoleDataModule
from lightning_genrec.content import ContentData, item_content
from lightning_genrec.errors import MissingContentError
from lightning_genrec.errors import HyperparameterError
from lightning_genrec.models import cvae as cvae_module
from lightning_genrec.models.cvae import ContentVAE, dae_stage, fold_in, item_step, latent_stage, outer_rows
from recbole_ext.compat import _settings_of_older_checkpoints
from recbole_ext.config import ConfigError, load_data, make_config

import conftest
from conftest import assert_entry_points_agree, random_ndcg, write_tiny_dataset

SMALL = conftest.SMALL["CVAE"]
COLD = {"cold_item_split": True, "cold_item_ratio": 0.3, "cold_item_valid_ratio": 0.5}


def _cvae_config(tiny_config, **extra):
    return {**tiny_config, **SMALL, "content_fields": ["class"], "content_min_count": 1, **extra}


# -- the content VAE -----------------------------------------------------------------------

def test_generation_network_is_the_inference_network_transposed():
    net = ContentVAE(30, (20, 10), 5)
    # parameters: 2 inference layers, mu, logvar, the one untied generation layer, the output bias
    assert sorted(n for n, _ in net.named_parameters()) == sorted([
        "encoder.0.weight", "encoder.0.bias", "encoder.1.weight", "encoder.1.bias", "mu.weight", "mu.bias",
        "logvar.weight", "logvar.bias", "generator_in.weight", "generator_in.bias", "out_bias"])
    z = torch.randn(3, 5)
    h = torch.sigmoid(net.generator_in(z))
    h = torch.sigmoid(h @ net.encoder[1].weight + net.encoder[0].bias)     # 10 -> 20, tied
    expected = h @ net.encoder[0].weight + net.out_bias                      # 20 -> 30, tied
    assert torch.allclose(net.decode(z), expected)
    mu, logvar = net.encode(torch.rand(3, 30))
    assert mu.shape == logvar.shape == (3, 5)


def test_z_is_mu_plus_scaled_noise():
    net = ContentVAE(12, (8,), 3)
    x, noise = torch.rand(4, 12), torch.randn(4, 3)
    _, mu, logvar, z = net(x, noise)
    assert torch.allclose(z, mu + noise * torch.exp(0.5 * logvar))


# -- ALS: the closed forms are the minimisers of the paper's objective ---------------------

def _dense_confidence(R, a, b):
    return np.where(R > 0, a, b)


def test_a_layer_wise_stage_is_a_tied_denoising_autoencoder():
    # the first epoch's loss, by hand: input masked, target clean, decoded by the transposed weights
    torch.manual_seed(0)
    x = (torch.rand(64, 12) < 0.3).float()
    layer = nn.Linear(12, 5)
    w, b = layer.weight.detach().clone(), layer.bias.detach().clone()
    first = dae_stage(layer, nn.Sigmoid(), lambda i: x[i], 64, 1, 64, 0.5, 1e-3, torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)                      # the stage's draws: the order, then the mask
    order = torch.randperm(64, generator=g)
    keep = torch.rand(64, 12, generator=g) >= 0.5
    target = x[order]
    expected = F.binary_cross_entropy_with_logits(torch.sigmoid((target * keep) @ w.T + b) @ w, target,
                                                  reduction="sum") / 64
    assert first == [pytest.approx(expected.item(), rel=1e-5)]
    assert not torch.equal(layer.weight, w)                   # and it took its step
    losses = dae_stage(layer, nn.Sigmoid(), lambda i: x[i], 64, 40, 16, 0.3, 0.01, torch.Generator().manual_seed(2))
    assert losses[-1] < 0.8 * losses[0]


def test_the_latent_stage_is_a_small_vae_on_the_top_activations():
    # the first epoch's loss, by hand: mu / logvar from h, z sampled, sigmoid(generator_in(z)) against h, + KL
    torch.manual_seed(0)
    net = ContentVAE(12, hidden=(6, 5), latent=3)
    h = torch.rand(32, 5)
    start = {k: v.clone() for k, v in net.state_dict().items()}
    first = latent_stage(net, h, 1, 32, 1e-3, torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)                      # the stage's draws: the order, then the noise
    target = h[torch.randperm(32, generator=g)]
    eps = torch.randn(32, 3, generator=g)
    mu = target @ start["mu.weight"].T + start["mu.bias"]
    logvar = target @ start["logvar.weight"].T + start["logvar.bias"]
    z = mu + eps * torch.exp(0.5 * logvar)
    logits = z @ start["generator_in.weight"].T + start["generator_in.bias"]
    expected = (F.binary_cross_entropy_with_logits(logits, target, reduction="sum")
                + 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1).sum()) / 32
    assert first == [pytest.approx(expected.item(), rel=1e-5)]
    changed = {k for k, v in net.state_dict().items() if not torch.equal(v, start[k])}
    assert changed == {"mu.weight", "mu.bias", "logvar.weight", "logvar.bias", "generator_in.weight",
                       "generator_in.bias"}


def test_fold_in_is_the_exact_weighted_least_squares_user_step():
    rng = np.random.default_rng(0)
    n_users, n_items, K, a, b, lam = 6, 9, 3, 1.0, 0.01, 0.1
    R = (rng.random((n_users, n_items)) < 0.4).astype(np.float64)
    R[:, 2] = 1.0                           # an input item outside the gram (nobody chose it in training)
    in_gram = np.ones(n_items, dtype=bool)
    in_gram[2] = False
    V = rng.normal(size=(n_items, K))
    gram = V[in_gram].T @ V[in_gram]
    U = fold_in(torch.from_numpy(R), torch.from_numpy(V), torch.from_numpy(gram), a, b, lam,
                in_gram=torch.from_numpy(in_gram)).numpy()
    # argmin_u sum_j C_ij (R_ij - u.v_j)^2 + lam |u|^2 over the items in the gram, plus the user's
    # other input items at confidence a
    C = np.where(in_gram, _dense_confidence(R, a, b), np.where(R > 0, a, 0.0))
    for i in range(n_users):
        A = V.T @ (C[i][:, None] * V) + lam * np.eye(K)
        assert np.allclose(U[i], np.linalg.solve(A, V.T @ (C[i] * R[i])))


def test_item_step_is_the_exact_minimiser_and_keeps_new_items_at_theta():
    rng = np.random.default_rng(1)
    n_users, n_items, K, a, b, lam_v = 7, 8, 3, 1.0, 0.01, 10.0
    R = (rng.random((n_users, n_items)) < 0.4).astype(np.float64)
    R[:, 5] = 0.0                            # items 5 and 6: no training interaction; 5 is learned, 6 new
    R[:, 6] = 0.0
    learned = np.ones(n_items, dtype=bool)
    learned[6] = False
    U, theta = rng.normal(size=(n_users, K)), rng.normal(size=(n_items, K))
    Rs = torch.from_numpy(R).to_sparse()
    V = item_step(Rs, torch.from_numpy(U), torch.from_numpy(theta), torch.from_numpy(learned), a, b,
                  lam_v).numpy()
    C = _dense_confidence(R, a, b)
    for j in np.flatnonzero(learned):  # argmin_v sum_i C_ij (R_ij - u_i.v)^2 + lam_v |v - theta_j|^2
        A = U.T @ (C[:, j][:, None] * U) + lam_v * np.eye(K)
        assert np.allclose(V[j], np.linalg.solve(A, U.T @ (C[:, j] * R[:, j]) + lam_v * theta[j]))
    # the learned item nobody chose: every pair unobserved at confidence b, as in the authors' code
    assert np.allclose(V[5], np.linalg.solve(b * U.T @ U + lam_v * np.eye(K), lam_v * theta[5]))
    assert not np.allclose(V[5], theta[5], atol=1e-3)
    assert np.allclose(V[6], theta[6])


def test_outer_rows():
    m = torch.randn(4, 3)
    assert torch.allclose(outer_rows(m).view(4, 3, 3), torch.einsum("nk,nl->nkl", m, m))


# -- content from RecBole item fields -------------------------------------------------------

def test_content_is_multi_hot_of_the_item_fields(tiny_config):
    config = make_config("CVAE", "tiny", config_dict=_cvae_config(tiny_config))
    dataset, train, _, _ = load_data(config)
    content = item_content(dataset, ["class"])
    assert content.dim == 4 and sorted(content.columns) == ["class=Action", "class=Comedy", "class=Drama",
                                                             "class=Horror"]
    tokens = dataset.field2id_token["item_id"]
    for item in (1, 7, 40):
        i = int(tokens[item][1:])                         # the tiny file: genres i*4//80 and (i+1)%4
        genres = {["Action", "Comedy", "Drama", "Horror"][g] for g in (i * 4 // 80, (i + 1) % 4)}
        on = {c.split("=")[1] for c, v in zip(content.columns, content.matrix[item]) if v == 1.0}
        assert on == genres
    assert (content.matrix[0] == 0).all()                 # padding item


def test_rare_tokens_and_float_fields(tmp_path, tiny_config):
    root = write_tiny_dataset(str(tmp_path), item_file=False)
    with open(os.path.join(root, "tiny", "tiny.item"), "w") as f:
        f.write("item_id:token\tclass:token_seq\tprice:float\n")
        for i in range(80):
            f.write(f"i{i}\t{'Rare' if i == 0 else 'Common'}\t{10.0 + i}\n")
    config = make_config("CVAE", "tiny", config_dict=_cvae_config(dict(tiny_config, data_path=root),
                                                                   content_fields=["class", "price"]))
    dataset, _, _, _ = load_data(config)
    content = item_content(dataset, ["class", "price"], min_count=2)
    assert content.columns == ["class=Common", "price"]  # 'Rare' is on one item only
    price = content.matrix[1:, 1]
    assert price.min() == 0.0 and price.max() == 1.0


def test_held_out_items_do_not_reach_training_content_through_recboles_missing_value_fill(tmp_path, tiny_config):
    # price is missing for i0-i9; RecBole fills it with the mean over every item, held-out ones too. Under the
    # cold-start protocol the content fitted on training items must not move when only held-out prices change.
    def content(name, price):
        root = write_tiny_dataset(str(tmp_path / name), item_file=False)
        with open(os.path.join(root, "tiny", "tiny.item"), "w") as f:
            f.write("item_id:token\tclass:token_seq\tprice:float\n")
            for i in range(80):
                f.write(f"i{i}\t{'Action' if i % 2 else 'Drama'}\t{'' if i < 10 else price(i)}\n")
        config = make_config("CVAE", "tiny", config_dict=_cvae_config(dict(tiny_config, data_path=root), **COLD,
                                                                       content_fields=["class", "price"]))
        _, train, _, _ = load_data(config)
        d = train._dataset
        data = ContentData.from_train_dataset(d, content_fields=["class", "price"], content_min_count=1)
        tokens = d.field2id_token["item_id"]
        held_out = {tokens[i] for i in np.concatenate([d.cold_items["valid"], d.cold_items["test"]])}
        price_column = data.content.columns.index("price")
        return held_out, {tokens[i]: float(data.content.matrix[i, price_column]) for i in data.learned_items()}

    base = lambda i: 10.0 + i
    held_out, before = content("a", base)
    same_draw, after = content("b", lambda i: 1000.0 if f"i{i}" in held_out else base(i))
    assert same_draw == held_out and not held_out & before.keys() and before.keys() == after.keys()
    assert [before[t] for t in sorted(before)] == pytest.approx([after[t] for t in sorted(after)], abs=1e-6)
    filled = [t for t in before if int(t[1:]) < 10]
    known = [base(int(t[1:])) for t in before if int(t[1:]) >= 10]
    assert filled and any(int(t[1:]) >= 10 for t in held_out)     # some filled training items; held-out prices
    expected = (np.mean(known) - min(known)) / (max(known) - min(known))
    assert before[filled[0]] == pytest.approx(expected, abs=1e-5)  # refilled with the training items' mean


def test_vocabulary_counts_items_not_repeats_and_only_the_fitted_items(tmp_path, tiny_config):
    # words repeat inside a row ("w1 w1"); a token field beside them; the vocabulary is fitted on a
    # subset of items. Reference: built from the raw strings written here, not from the encoder.
    root = write_tiny_dataset(str(tmp_path), item_file=False)
    rng = np.random.default_rng(3)
    words_of, kind_of = {}, {}
    with open(os.path.join(root, "tiny", "tiny.item"), "w") as f:
        f.write("item_id:token\twords:token_seq\tkind:token\n")
        for i in range(80):
            words = [f"w{w}" for w in rng.integers(0, 12, size=rng.integers(1, 5))]
            words += words[:1] + ([f"rare{i}"] if i % 10 == 0 else [])   # the first word twice; a rare one
            words += ["twice", "twice"] if i in (0, 2) else ["unfit"] if i in (1, 3, 5) else []
            words_of[f"i{i}"], kind_of[f"i{i}"] = set(words), f"k{i % 7}"
            f.write(f"i{i}\t{' '.join(words)}\t{kind_of[f'i{i}']}\n")
    config = make_config("CVAE", "tiny", config_dict=_cvae_config(dict(tiny_config, data_path=root),
                                                                   content_fields=["words", "kind"]))
    dataset, _, _, _ = load_data(config)
    raw = dataset.field2id_token["item_id"]
    fit = np.array([dataset.field2token_id["item_id"][f"i{i}"] for i in range(0, 80, 2)])   # even items
    content = item_content(dataset, ["words", "kind"], fit_items=fit, min_count=3)
    expected = []
    for field, values in (("words", words_of), ("kind", kind_of)):
        count = {}
        for j in fit:
            for t in (values[raw[j]] if field == "words" else {values[raw[j]]}):
                count[t] = count.get(t, 0) + 1
        kept = {t for t, n in count.items() if n >= 3}
        expected += sorted(kept, key=lambda t: dataset.field2token_id[field][t])
        assert set(c.split("=")[1] for c in content.columns if c.startswith(field + "=")) == kept
    assert [c.split("=")[1] for c in content.columns] == expected
    # min_count dropped the rare words, "twice" (4 times on 2 items) and "unfit" (on 3 items not fitted)
    assert not any(t.startswith("rare") or t in ("twice", "unfit") for t in expected)
    for j in range(1, dataset.item_num):
        on = {c.split("=")[1] for c, v in zip(content.columns, content.matrix[j]) if v == 1.0}
        assert on == (words_of[raw[j]] | {kind_of[raw[j]]}) & set(expected)
    assert set(np.unique(content.matrix)) <= {0.0, 1.0} and (content.matrix[0] == 0).all()


def test_missing_content_fields_are_named(tiny_config):
    with pytest.raises(ConfigError, match=r"looked for the item fields class, plot.*no field plot.*its fields: "
                                          r"item_id, class"):
        make_config("CVAE", "tiny", config_dict=_cvae_config(tiny_config, content_fields=["class", "plot"]))


def test_dataset_without_item_file_is_a_clear_error(tmp_path, tiny_config):
    root = write_tiny_dataset(str(tmp_path), item_file=False)
    with pytest.raises(ConfigError, match="has no tiny.item file"):
        make_config("CVAE", "tiny", config_dict=_cvae_config(dict(tiny_config, data_path=root)))
    with pytest.raises(MissingContentError, match="looked for the item fields class"):
        config = make_config("MVAE", "tiny", config_dict=dict(tiny_config, data_path=root))
        item_content(load_data(config)[0], ["class"], model="CVAE")


# -- training ---------------------------------------------------------------------------------

def _datamodule(tiny_config, **extra):
    dm = RecBoleDataModule("tiny", model="CVAE", config_dict=_cvae_config(tiny_config, **COLD, **extra))
    dm.setup()
    return dm


def test_trains_over_items_and_vae_never_sees_held_out_items(tiny_config):
    dm = _datamodule(tiny_config)
    data = dm.data
    assert isinstance(data, ContentData)
    examples = data.train_examples()
    assert set(examples) == set(np.flatnonzero(data.item_counts > 0))
    held_out = np.flatnonzero(np.asarray(data.valid.positives.sum(0)).ravel()
                              + np.asarray(data.test.positives.sum(0)).ravel())
    assert not set(examples) & set(held_out)
    batch = data.train_batch(examples[:5])
    assert batch["content"].shape == (5, data.content.dim)


def _with_unchosen_items(tmp_path, n_new=6):
    """The tiny data set plus ``n_new`` items in the .item file that nobody has interacted with,
    the only ones carrying the genre 'Western'."""
    root = write_tiny_dataset(str(tmp_path / "data"))
    with open(os.path.join(root, "tiny", "tiny.item"), "a") as f:
        for i in range(80, 80 + n_new):
            f.write(f"i{i}\tWestern Drama\n")
    return root


def test_outside_the_cold_protocol_every_item_is_learned_from_as_the_authors_do(tiny_config, tmp_path):
    root = _with_unchosen_items(tmp_path)
    dm = RecBoleDataModule("tiny", model="CVAE", config_dict=_cvae_config(dict(tiny_config, data_path=root)))
    dm.setup()
    data = dm.data
    unchosen = np.flatnonzero(data.item_counts[1:] == 0) + 1
    assert data.content_items == "all" and len(unchosen) >= 6
    assert list(data.train_examples()) == list(range(1, data.n_items))
    assert "class=Western" in data.content.columns         # the vocabulary covers the unchosen items
    model = CVAE(**SMALL)
    model.attach_data(data)
    assert bool(model.learned[1:].all()) and not bool(model.learned[0])
    model.init_factors()
    model.als_sweep()
    # one sweep by hand, dense, over every item but RecBole's padding 0, as the authors' code runs
    # it: the V-step with C_ij = a (observed) or b (every other pair, the unchosen items' included);
    # the U-step with b only on the items somebody chose (their gram skips the others)
    h = model.hparams
    a, b, K = h.confidence_a, h.confidence_b, h.latent_dimension
    V = model.item_factors.double().numpy()[1:]
    theta = model.item_means().numpy()[1:]
    R = data.train.toarray()[:, 1:]
    C = np.where(R > 0, a, b)
    C_user = np.where(R.sum(axis=0) > 0, C, 0.0)
    U = np.stack([np.linalg.solve(V.T @ (c[:, None] * V) + h.lambda_u * np.eye(K), V.T @ (c * r))
                  for c, r in zip(C_user, R)])
    expected = np.stack([np.linalg.solve(U.T @ (c[:, None] * U) + h.lambda_v * np.eye(K),
                                         U.T @ (c * r) + h.lambda_v * t) for c, r, t in zip(C.T, R.T, theta)])
    model.als_sweep()
    got = model.item_factors.double().numpy()[1:]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    # for an item nobody chose that is the authors' (b U^T U + lambda_v I)^-1 lambda_v theta_j, not theta_j
    shrunk = np.linalg.solve(b * U.T @ U + h.lambda_v * np.eye(K), h.lambda_v * theta[unchosen - 1].T).T
    np.testing.assert_allclose(got[unchosen - 1], shrunk, rtol=1e-4, atol=1e-5)
    assert np.abs(got[unchosen - 1] - theta[unchosen - 1]).max() > 1e-3


def test_content_items_train_treats_items_without_interactions_as_new(tiny_config, tmp_path):
    root = _with_unchosen_items(tmp_path)
    dm = RecBoleDataModule("tiny", model="CVAE", config_dict=_cvae_config(dict(tiny_config, data_path=root),
                                                                          content_items="train"))
    dm.setup()
    data = dm.data
    assert data.content_items == "train"
    assert set(data.train_examples()) == set(np.flatnonzero(data.item_counts > 0))
    assert "class=Western" not in data.content.columns
    model = CVAE(**SMALL)
    model.attach_data(data)
    model.init_factors()
    model.als_sweep()
    new = ~model.learned
    new[0] = False
    assert int(new.sum()) >= 6
    torch.testing.assert_close(model.item_factors[new], model.item_means().float()[new])


def test_cold_protocol_learns_from_training_items_only_and_refuses_all(tiny_config):
    assert _datamodule(tiny_config).data.content_items == "train"       # auto under cold_item_split
    # the data API alone (no CVAE config rules) reads the split too
    load_col = {"inter": ["user_id", "item_id", "rating", "timestamp"], "item": ["item_id", "class"]}
    config = make_config("MVAE", "tiny", config_dict=dict(tiny_config, **COLD, load_col=load_col))
    _, train, valid, test = load_data(config)
    data = ContentData.from_recbole(train, valid, test, content_fields=["class"], content_min_count=1)
    assert data.content_items == "train"
    assert set(data.learned_items()) == set(np.flatnonzero(data.item_counts > 0))
    with pytest.raises(ValueError, match="would learn from the held-out items of this cold-start split"):
        ContentData.from_recbole(train, valid, test, content_fields=["class"], content_min_count=1,
                                 content_items="all")
    with pytest.raises(ConfigError, match="content_items: all learns from every item's content, but "
                                          "cold_item_split holds items out"):
        make_config("CVAE", "tiny", config_dict=_cvae_config(tiny_config, **COLD, content_items="all"))
    with pytest.raises(ConfigError, match="content_items"):
        make_config("CVAE", "tiny", config_dict=_cvae_config(tiny_config, content_items="some"))


def test_cold_items_are_scored_from_content_and_beat_chance(tiny_config, tmp_path):
    # a larger tiny dataset: 200 items, so that 30 test items are not almost all relevant
    root = write_tiny_dataset(str(tmp_path / "data"), n_users=100, n_items=200, per_user=25)
    pl.seed_everything(0)
    dm = _datamodule(dict(tiny_config, data_path=root), epochs=10)
    model = CVAE(**SMALL)
    trainer = pl.Trainer(max_epochs=10, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_checkpointing=False, default_root_dir=str(tmp_path))
    trainer.fit(model, datamodule=dm)
    rated = torch.from_numpy(dm.data.item_counts > 0)
    # v_j = E[z_j] exactly for items without training interactions
    theta = model.item_means().float()
    assert torch.allclose(model.item_factors[~rated], theta[~rated], atol=1e-6)
    assert not torch.allclose(model.item_factors[rated], theta[rated], atol=1e-3)
    tested = trainer.test(model, datamodule=dm, verbose=False)[0]["test/ndcg@10"]
    # the same users with random scores over the same candidates
    assert tested > 1.5 * random_ndcg(dm.data)


def test_checkpoints_from_before_content_items_still_load():
    # the mask was stored as 'rated' (the training items); the saved RecBole config had no content_items
    model = CVAE(n_items=12, n_content=5, **SMALL)
    state = model.state_dict()
    mask = torch.zeros(12, dtype=torch.bool)
    mask[[2, 3, 7]] = True
    state["rated"] = mask
    del state["learned"]
    fresh = CVAE(n_items=12, n_content=5, **SMALL)
    fresh.load_state_dict(state)                                     # strict
    assert torch.equal(fresh.learned, mask) and torch.equal(fresh.rated, mask)
    # saved while the U-step's gram ran over every learned item: it keeps scoring that way
    state = model.state_dict()
    state["learned"] = mask
    del state["rated"]
    fresh = CVAE(n_items=12, n_content=5, **SMALL)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.learned, mask) and torch.equal(fresh.rated, mask)
    old, new, other = {"model": "CVAE"}, {"model": "CVAE", "content_items": "all"}, {"model": "MVAE"}
    for config in (old, new, other):
        _settings_of_older_checkpoints(config)
    assert old["content_items"] == "train" and new["content_items"] == "all" and "content_items" not in other


def test_user_vectors_are_the_als_user_step_on_the_input_row(tiny_config):
    dm = _datamodule(tiny_config)
    model = CVAE(**SMALL)
    model.attach_data(dm.data)
    model.init_factors()
    model.als_sweep()
    users = dm.data.split("test").users[:4]
    x = torch.from_numpy(dm.data.train[users].toarray())
    V = model.item_factors.double()
    Vr = V[model.rated]
    u = fold_in(x.double(), V, Vr.t() @ Vr, 1.0, 0.01, 0.1, in_gram=model.rated)
    assert torch.allclose(model.user_factors(x), u)
    scores = model.score({"input": x})
    assert torch.allclose(scores, (u @ V.t()).float(), atol=1e-5)


def test_cold_start_protocol_gives_the_same_numbers_through_both_entry_points(tiny_config):
    # (RecBole's default split is in test_models.py's contract)
    cfg = _cvae_config(tiny_config, **COLD, epochs=2)
    result = recbole_ext.run_recbole(model="CVAE", dataset="tiny", config_dict=cfg)
    assert result["test_result"]["ndcg@10"] > 0
    dm = RecBoleDataModule("tiny", model="CVAE", config_dict=cfg)
    dm.setup()
    assert_entry_points_agree(result, CVAE(n_items=dm.n_items, n_content=dm.data.content.dim, **SMALL), dm)


def test_recboles_own_run_recbole_and_warm_split(tiny_config):
    from recbole.quick_start import run_recbole

    result = run_recbole(model="CVAE", dataset="tiny", config_dict=_cvae_config(tiny_config, epochs=1))
    assert 0 < result["test_result"]["ndcg@10"] <= 1


def test_a_loaded_checkpoint_neither_pretrains_nor_reinitialises(tiny_config, tmp_path):
    # (identical scores after a round trip: test_models.py's contract)
    dm = _datamodule(tiny_config, epochs=2)
    model = CVAE(**SMALL)
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                         default_root_dir=str(tmp_path))
    trainer.fit(model, datamodule=dm)
    path = str(tmp_path / "cvae.ckpt")
    trainer.save_checkpoint(path)
    loaded = CVAE.load_from_checkpoint(path)
    x = torch.from_numpy(dm.data.train[dm.data.split("test").users].toarray())
    assert torch.equal(model.score({"input": x}), loaded.score({"input": x}))
    assert bool(loaded.progress.all())   # a resumed fit neither pre-trains nor re-initialises V again


def test_validation_sees_the_epochs_als_sweep(tiny_config, tmp_path):
    # the sweep runs on the last training batch, before Lightning validates the epoch: the score logged
    # by fit is the fitted model's score
    dm = _datamodule(tiny_config)
    model = CVAE(**SMALL)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_checkpointing=False, default_root_dir=str(tmp_path))
    trainer.fit(model, datamodule=dm)
    logged = float(trainer.callback_metrics["valid/ndcg@10"])
    assert int(model.sweeps) == 1
    again = trainer.validate(model, datamodule=dm, verbose=False)[0]["valid/ndcg@10"]
    assert logged == pytest.approx(again, abs=1e-7)


def test_resumed_fit_neither_pretrains_nor_reinitialises(tiny_config, tmp_path, monkeypatch):
    dm = _datamodule(tiny_config)
    model = CVAE(**SMALL)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                         default_root_dir=str(tmp_path))
    trainer.fit(model, datamodule=dm)
    path = str(tmp_path / "one.ckpt")
    trainer.save_checkpoint(path)
    calls = []
    monkeypatch.setattr(CVAE, "pretrain", lambda self: calls.append("pretrain"))
    monkeypatch.setattr(CVAE, "init_factors", lambda self: calls.append("init"))
    resumed = CVAE(**SMALL)
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                         default_root_dir=str(tmp_path))
    trainer.fit(resumed, datamodule=dm, ckpt_path=path)
    assert calls == [] and int(resumed.sweeps) == 2


def test_layerwise_pretraining_trains_the_layers_then_the_whole_vae(tiny_config, tmp_path, monkeypatch):
    dm = _datamodule(tiny_config)
    model = CVAE(**{**SMALL, "pretrain_schedule": "layerwise", "pretrain_layer_epochs": 20,
                    "pretrain_learning_rate": 0.01})
    model.attach_data(dm.data)
    start = {k: v.clone() for k, v in model.net.state_dict().items()}
    items = torch.from_numpy(dm.data.learned_items())
    losses = model.pretrain_layers(model._content(), items, torch.Generator().manual_seed(0))
    assert len(losses) == 3                                   # two hidden layers, then the latent layer
    assert all(len(stage) == 20 and stage[-1] < stage[0] for stage in losses)
    changed = {k for k, v in model.net.state_dict().items() if not torch.equal(v, start[k])}
    assert changed == set(start) - {"out_bias"}               # the layer-wise stages never touch the output bias
    # pretrain(): the layer-wise stages, then pretrain_epochs of the whole VAE, the one that trains the output bias
    for epochs in (0, 2):
        m = CVAE(**{**SMALL, "pretrain_schedule": "layerwise", "pretrain_layer_epochs": 2, "pretrain_epochs": epochs})
        m.attach_data(dm.data)
        w0 = m.net.encoder[1].weight.clone()
        m.pretrain()
        assert bool(m.progress[0]) and not torch.equal(m.net.encoder[1].weight, w0)
        assert bool(m.net.out_bias.abs().sum() > 0) == (epochs > 0)
    # a fit runs them, also with no whole-VAE epochs
    fitted = CVAE(**{**SMALL, "pretrain_schedule": "layerwise", "pretrain_layer_epochs": 2, "pretrain_epochs": 0})
    stages = []
    monkeypatch.setattr(CVAE, "pretrain_layers", lambda self, *a: stages.append(a))
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_checkpointing=False, default_root_dir=str(tmp_path))
    trainer.fit(fitted, datamodule=dm)
    assert len(stages) == 1 and bool(fitted.progress.all())


def test_each_pretraining_schedule_feeds_and_scores_the_whole_vae_as_it_says(tiny_config, monkeypatch):
    # layerwise: each stage trains on the previous layer's clean activations (after its stage), and the
    # whole VAE then sees clean input and no L2 (the authors' run_all); vae: masked input, L2 in the loss
    dm = _datamodule(tiny_config)
    calls, terms, losses = [], [], []
    dae, vae_terms = cvae_module.dae_stage, cvae_module.vae_terms

    def spy_dae(layer, act, rows, n, *rest):
        seen = rows(torch.arange(n))
        if calls:
            before, before_rows = calls[-1]
            with torch.no_grad():
                assert torch.allclose(seen, torch.sigmoid(before(before_rows)), rtol=0, atol=1e-6)
        calls.append((layer, seen))
        return dae(layer, act, rows, n, *rest)

    def spy_terms(*args):
        terms.append(vae_terms(*args))
        return terms[-1]

    monkeypatch.setattr(cvae_module, "dae_stage", spy_dae)
    monkeypatch.setattr(cvae_module, "vae_terms", spy_terms)
    monkeypatch.setattr(cvae_module, "_check_pretraining_loss", lambda loss: losses.append(loss.item()))
    for schedule in ("layerwise", "vae"):
        calls.clear(), terms.clear(), losses.clear()
        model = CVAE(**{**SMALL, "pretrain_schedule": schedule, "pretrain_layer_epochs": 2, "pretrain_epochs": 1,
                        "pretrain_batch_size": 1000, "reg_weight": 0.5})
        model.attach_data(dm.data)
        X = model._content()[torch.from_numpy(dm.data.learned_items())]
        inputs = []
        forward = model.net.forward
        model.net.forward = lambda x, noise=None: inputs.append(x.clone()) or forward(x, noise)
        model.pretrain()
        assert len(inputs) == len(terms) == 1                 # the whole-VAE epoch: one batch
        recon, kl, l2 = terms[0]
        if schedule == "layerwise":
            assert [layer for layer, _ in calls] == list(model.net.encoder)
            assert torch.equal(calls[0][1], X)                # the first stage: the content rows
            assert torch.equal(inputs[0].sum(0), X.sum(0))    # every item, unmasked
            assert losses[-1] == pytest.approx((recon + kl).item(), rel=1e-6)
        else:
            assert calls == []
            assert inputs[0].sum() < X.sum()                  # masked
            assert losses[-1] == pytest.approx((recon + kl + 0.5 * l2).item(), rel=1e-6)


def test_layerwise_pretraining_needs_sigmoid_layers():
    with pytest.raises(HyperparameterError, match="pretrain_schedule='layerwise' needs activation='sigmoid'"):
        CVAE(pretrain_schedule="layerwise", activation="tanh")
    CVAE(pretrain_schedule="vae", activation="tanh")


def test_an_unfitted_model_refuses_to_evaluate(tiny_config):
    dm = _datamodule(tiny_config)
    with pytest.raises(RuntimeError, match="has not been fitted"):
        pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False).test(CVAE(**SMALL), datamodule=dm)


def test_invalid_content_min_count_is_named(tiny_config):
    with pytest.raises(ConfigError, match="content_min_count='x'"):
        make_config("CVAE", "tiny", config_dict=_cvae_config(tiny_config, content_min_count="x"))


def test_needs_content_data(tiny_config):
    dm = RecBoleDataModule("tiny", model="MVAE", config_dict=tiny_config)
    dm.setup()
    with pytest.raises(ValueError, match="CVAE needs item content"):
        CVAE(**SMALL).attach_data(dm.data)


def test_confidence_b_above_confidence_a_is_refused():
    # (each setting's own range: test_models.py's contract)
    with pytest.raises(HyperparameterError, match="confidence_b=2.0 > confidence_a=1.0"):
        CVAE(confidence_b=2.0)


@pytest.mark.slow   # two processes, about 16 s; MVAE's two-process tests stay in the fast suite
def test_ddp_processes_keep_identical_vae_and_item_factors(tmp_path):
    import subprocess
    import sys

    root = str(write_tiny_dataset(str(tmp_path), name="odd", n_users=61, n_items=50))
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scripts", "ddp_train_cvae.py")
    prefix = str(tmp_path / "cvae")
    proc = subprocess.run([sys.executable, script, root, "2", prefix], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(f"{prefix}.rank{r}.pt", weights_only=False) for r in (0, 1))
    assert r0["world_size"] == 2
    assert torch.equal(r0["item_factors"], r1["item_factors"]) and r0["item_factors"].abs().sum() > 0
    for key, value in r0["net"].items():
        assert torch.equal(value, r1["net"][key]), key
