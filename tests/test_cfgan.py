"""CFGAN: the paper's G / D, ZR and PM, D-then-G rounds with two optimizers, collapse detection, both entry points."""
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

import recbole_ext
from lightning_genrec import CFGAN
from lightning_genrec.data import NonZeros
from recbole_ext import RecBoleDataModule
from lightning_genrec.models import cfgan as cfgan_module
from lightning_genrec.models.cfgan import (Discriminator, GANCollapseError, Generator, RoundDraws, SparseRows,
                                           d_loss_fn, dense_rows,
                                           draw_keys, g_loss_fn, sample_unobserved)
from recbole_ext.config import ConfigError, make_config

import conftest
from conftest import (assert_close_across_batch_shapes, assert_entry_points_agree, assert_each_gan_phase_moves_only_its_network, fit_model,
                      random_ndcg)

SMALL = conftest.SMALL["CFGAN"]


def _config(tiny_config, **extra):
    return {**tiny_config, **{k: v for k, v in SMALL.items() if k != "topk"}, **extra}


def _datamodule(tiny_config, **extra):
    dm = RecBoleDataModule("tiny", model="CFGAN", config_dict=_config(tiny_config, **extra))
    dm.setup()
    return dm


# -- the networks and losses -------------------------------------------------------------------

def test_generator_is_sigmoid_hidden_linear_output_without_noise():
    G = Generator(10, hidden=6, layers=1)
    # the first layer is a linear map that reads the condition by its entries (models.layers)
    assert [type(m).__name__ for m in G.net] == ["SparseInputLinear", "Sigmoid", "Linear"]
    c = torch.rand(3, 10)
    assert torch.equal(G(c), G(c))                          # no noise: a function of the condition
    D = Discriminator(10, hidden=4, layers=1)
    assert D.net[0].in_features == 20 and D(torch.rand(3, 10), c).shape == (3,)


@pytest.mark.parametrize("layers", [1, 2, 0])
def test_networks_are_the_papers_mlps_with_the_authors_initial_values(layers):
    """G(c) = mlp(c), D(x, c) = mlp(concat(c, x)): the same initial values as the plain MLPs drawn
    from the same seed, and the same outputs from dense rows and from their entries."""
    n = 12
    c = (torch.rand(5, n, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    x = torch.randn(5, n)
    torch.manual_seed(3)
    G = Generator(n, hidden=6, layers=layers)
    torch.manual_seed(3)
    g_ref = cfgan_module._mlp(n, 6, layers, n)
    torch.manual_seed(4)
    D = Discriminator(n, hidden=4, layers=layers)
    torch.manual_seed(4)
    d_ref = cfgan_module._mlp(2 * n, 4, layers, 1)
    first = D.net[0]
    assert torch.equal(torch.cat([first.first.weight, first.second.weight]).t(), d_ref[0].weight)
    assert torch.equal(first.first.bias, d_ref[0].bias)
    g_first = G.net[0].weight.t() if layers else G.net[0].weight
    assert torch.equal(g_first, g_ref[0].weight)
    entries = NonZeros.of(c)
    for cond in (c, entries):
        assert torch.allclose(G(cond), g_ref(c), atol=1e-6)
        assert torch.allclose(D(x, cond), d_ref(torch.cat([c, x], 1)).squeeze(1), atol=1e-6)
        assert torch.allclose(D(cond, cond), d_ref(torch.cat([c, c], 1)).squeeze(1), atol=1e-6)


def test_an_older_checkpoint_with_plain_linear_first_layers_loads():
    torch.manual_seed(5)
    n = 9
    g_ref, d_ref = cfgan_module._mlp(n, 6, 1, n), cfgan_module._mlp(2 * n, 4, 1, 1)
    G, D = Generator(n, hidden=6), Discriminator(n, hidden=4)
    G.net.load_state_dict(g_ref.state_dict())
    D.net.load_state_dict(d_ref.state_dict())
    c, x = (torch.rand(3, n) < 0.4).float(), torch.rand(3, n)
    assert torch.allclose(G(c), g_ref(c), atol=1e-6)
    assert torch.allclose(D(x, c), d_ref(torch.cat([c, x], 1)).squeeze(1), atol=1e-6)


@pytest.mark.parametrize("mode", ["user", "item"])
def test_a_round_reading_rows_by_their_entries_is_the_round_on_dense_rows(tiny_config, tmp_path, monkeypatch, mode):
    """G and D read the real rows by their entries; a round that hands them the dense rows instead
    (the paper's product, term by term) ends with the same weights, to float tolerance."""
    def one_round():
        pl.seed_everything(0)
        model = CFGAN(**{**SMALL, "mode": mode})
        fit_model(model, _datamodule(tiny_config, mode=mode), 1, tmp_path)
        return model.state_dict()

    by_entries = one_round()
    monkeypatch.setattr(SparseRows, "nonzeros", SparseRows.dense)
    dense_rows_round = one_round()
    assert by_entries.keys() == dense_rows_round.keys()
    for key, value in by_entries.items():
        # a round is many Adam steps from the same start: sums in another order, float32 tolerance
        assert torch.allclose(value, dense_rows_round[key], atol=1e-5), key


def test_sparse_rows_give_the_same_rows_by_entries_and_dense():
    m = sp.random(7, 11, density=0.3, format="csr", random_state=0)
    m.data[:] = 1.0
    rows = SparseRows.of(m, np.array([0, 2, 3, 6]), "cpu")
    idx = torch.tensor([3, 0, 2])
    assert torch.equal(rows.nonzeros(idx).to_dense(), rows.dense(idx))
    assert torch.equal(rows.dense(idx), torch.from_numpy(m[[6, 0, 3]].toarray()).float())


def test_unobserved_samples_are_the_ratio_of_each_rows_zeros():
    rows = (torch.rand(20, 50, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    ids = torch.arange(100, 120)
    picked = sample_unobserved(rows, 0.7, 1, ids)
    assert not (picked & (rows > 0)).any()
    expected = torch.floor((rows == 0).sum(1) * 0.7).long()
    assert torch.equal(picked.sum(1), expected)
    again = sample_unobserved(rows, 0.7, 2, ids)
    assert not torch.equal(picked, again)                   # a fresh draw each round (new seed)
    assert torch.equal(sample_unobserved(rows, 0.0, 1, ids).sum(1), torch.zeros(20, dtype=torch.long))
    assert torch.equal(sample_unobserved(rows, 1.0, 1, ids), rows == 0)


def test_the_cpus_per_row_selection_picks_what_a_sort_picks():
    # the k-th smallest key per row: kthvalue row by row on the CPU, one sort elsewhere; the same set
    keys = torch.randint(0, 50, (40, 30), generator=torch.Generator().manual_seed(2))    # with ties
    k = torch.randint(1, 31, (40,), generator=torch.Generator().manual_seed(3))
    by_sort = keys.sort(dim=1).values.gather(1, (k - 1)[:, None])
    assert torch.equal(cfgan_module._kth_smallest(keys, k), by_sort)


def test_a_rows_draw_depends_only_on_the_seed_and_its_id():
    # what lets a round draw its ZR / PM entries one minibatch at a time (and each process its share)
    rows = (torch.rand(30, 40, generator=torch.Generator().manual_seed(0)) < 0.2).float()
    ids = torch.arange(30) * 7 + 3
    whole = sample_unobserved(rows, 0.5, 11, ids)
    order = torch.randperm(30, generator=torch.Generator().manual_seed(1))
    for idx in order.split(8):
        assert torch.equal(sample_unobserved(rows[idx], 0.5, 11, ids[idx]), whole[idx])


def test_unobserved_draws_are_uniform():
    # each unobserved entry of a row is picked with probability n_pick / n_unobserved over seeds
    rows = torch.zeros(1, 12)
    rows[0, [2, 5]] = 1.0
    freq = torch.stack([sample_unobserved(rows, 0.5, seed, torch.tensor([4]))[0] for seed in range(4000)]).float().mean(0)
    assert freq[[2, 5]].sum() == 0
    free = freq[rows[0] == 0]
    assert torch.allclose(free, torch.full_like(free, 0.5), atol=0.04)   # 5 of 10, binomial sd 0.008


def test_keys_have_no_ties_within_a_row():
    keys = draw_keys(123, torch.tensor([0, 1, 2 ** 31 + 5]), 100_000)
    assert all(len(torch.unique(k)) == 100_000 for k in keys)
    assert int(keys.min()) >= 0 and int(keys.max()) < 2 ** 32


def test_dense_rows_are_the_csr_rows():
    m = sp.random(9, 13, density=0.3, format="csr", random_state=0)
    m.data[:] = 1.0
    idx = torch.tensor([4, 0, 8, 4])
    got = dense_rows(torch.from_numpy(m.indptr).long(), torch.from_numpy(m.indices).long(), idx, 13)
    assert torch.equal(got, torch.from_numpy(m[idx.numpy()].toarray()).float())


def test_losses_are_the_papers():
    torch.manual_seed(0)
    G, D = Generator(12, 8), Discriminator(12, 6)
    c = (torch.rand(5, 12) < 0.4).float()
    mask = ((c > 0) | (torch.rand(5, 12) < 0.5)).float()
    zr = ((c == 0) & (torch.rand(5, 12) < 0.5)).float()
    out = G(c)
    real, fake = D(c, c), D(out.detach() * mask, c)
    expected_d = F.binary_cross_entropy_with_logits(real, torch.ones(5)) + \
        F.binary_cross_entropy_with_logits(fake, torch.zeros(5))
    assert torch.allclose(d_loss_fn(D, c, out.detach() * mask), expected_d)
    # ZR on the *unmasked* output, summed over the sampled entries, averaged over rows
    zr_term = (out.pow(2) * zr).sum(1).mean()
    expected_g = F.binary_cross_entropy_with_logits(D(out * mask, c), torch.ones(5)) + 0.03 * zr_term
    assert torch.allclose(g_loss_fn(D, c, out, mask, zr, 0.03), expected_g)


def test_l2_as_adam_weight_decay_is_the_gradient_of_the_authors_l2_term():
    torch.manual_seed(0)
    G = Generator(6, 4)
    reg, c = 0.001, torch.rand(3, 6)
    # the authors: loss + reg * ||theta||^2 / 2; here: Adam(weight_decay=reg) adds reg * theta to the gradient
    loss = G(c).pow(2).mean()
    with_term = torch.autograd.grad(loss + reg * sum(p.pow(2).sum() for p in G.parameters()) / 2,
                                    list(G.parameters()))
    plain = torch.autograd.grad(G(c).pow(2).mean(), list(G.parameters()))
    for w, g, p in zip(with_term, plain, G.parameters()):
        assert torch.allclose(w, g + reg * p)
    opt = CFGAN().configure_optimizers.__func__(SimpleNamespace(
        hparams=SimpleNamespace(g_learning_rate=1e-4, d_learning_rate=1e-4, g_reg_weight=reg, d_reg_weight=0.0),
        generator=G, discriminator=Discriminator(6, 4)))
    assert opt[0].defaults["weight_decay"] == reg and opt[1].defaults["weight_decay"] == 0.0


def test_adversarial_gradient_reaches_the_generator():
    torch.manual_seed(0)
    G, D = Generator(12, 8), Discriminator(12, 6)
    c = (torch.rand(5, 12) < 0.4).float()
    out = G(c)
    g_loss_fn(D, c, out, torch.ones_like(c), torch.zeros_like(c), 0.0).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in G.parameters())


# -- the round -------------------------------------------------------------------------------------

def test_a_round_is_d_passes_then_g_passes(tiny_config, tmp_path, monkeypatch):
    calls = []
    d_real, g_real = cfgan_module.d_loss_fn, cfgan_module.g_loss_fn
    monkeypatch.setattr(cfgan_module, "d_loss_fn", lambda *a: calls.append("D") or d_real(*a))
    monkeypatch.setattr(cfgan_module, "g_loss_fn", lambda *a: calls.append("G") or g_real(*a))
    dm = _datamodule(tiny_config)
    fit_model(CFGAN(**SMALL), dm, 1, tmp_path)
    rows = len(dm.data.train_users())   # the users with training interactions
    d_batches, g_batches = 2 * -(-rows // 16), 4 * -(-rows // 8)
    assert calls == ["D"] * d_batches + ["G"] * g_batches


def test_loss_stays_finite_and_ranking_beats_chance(tiny_config, tmp_path):
    pl.seed_everything(0)
    dm = _datamodule(tiny_config)
    model = CFGAN(**SMALL, g_learning_rate=1e-3, d_learning_rate=1e-3)
    trainer = fit_model(model, dm, 40, tmp_path)
    ours = trainer.test(model, datamodule=dm, verbose=False)[0]["test/ndcg@10"]
    assert ours > 1.5 * random_ndcg(dm.data)


def test_item_mode_scores_are_the_users_entries_of_each_items_generated_vector(tiny_config, tmp_path):
    dm = _datamodule(tiny_config, mode="item")
    model = CFGAN(**{**SMALL, "mode": "item"})
    fit_model(model, dm, 2, tmp_path)
    assert model.generator.net[0].in_features == dm.data.n_users
    users = torch.as_tensor(dm.data.split("test").users[:4])
    with torch.no_grad():
        items = torch.from_numpy(dm.data.train.T.toarray()).float()
        expected = model.generator(items).t()[users]
        got = model.score({"user": users, "input": None})
    # the score path takes G's first layer from the sparse item rows: other float sums, stated tolerance
    assert_close_across_batch_shapes(got, expected)


def test_item_mode_gives_the_same_numbers_through_both_entry_points(tiny_config):
    # (user mode, the default, is in test_models.py's contract)
    mode = "item"
    cfg = _config(tiny_config, epochs=2, mode=mode)
    result = recbole_ext.run_recbole(model="CFGAN", dataset="tiny", config_dict=cfg)
    assert result["test_result"]["ndcg@10"] > 0
    dm = RecBoleDataModule("tiny", model="CFGAN", config_dict=cfg)
    dm.setup()
    lm = CFGAN(n_items=dm.n_items, n_users=dm.data.n_users, **{**SMALL, "mode": mode})
    lm.attach_data(dm.data)
    assert_entry_points_agree(result, lm, dm)


def test_each_phase_moves_only_its_own_network(tiny_config, tmp_path, monkeypatch):
    model = CFGAN(**SMALL)
    assert_each_gan_phase_moves_only_its_network(model, cfgan_module, lambda: fit_model(model, _datamodule(tiny_config), 1, tmp_path),
                                                 monkeypatch)


def test_item_scores_follow_new_weights(tiny_config, tmp_path):
    dm = _datamodule(tiny_config, mode="item")
    model = CFGAN(**{**SMALL, "mode": "item"})
    fit_model(model, dm, 1, tmp_path)
    users = torch.as_tensor(dm.data.split("test").users[:3])
    before = model.score({"user": users, "input": None}).clone()
    other = CFGAN(n_items=dm.n_items, n_users=dm.data.n_users, **{**SMALL, "mode": "item"})
    model.load_state_dict(other.state_dict())
    assert not torch.allclose(model.score({"user": users, "input": None}), before)


# -- collapse ----------------------------------------------------------------------------------------

def test_non_finite_loss_is_reported_as_collapse(tiny_config, tmp_path):
    dm = _datamodule(tiny_config)
    model = CFGAN(n_items=dm.n_items, **SMALL)
    with torch.no_grad():
        model.generator.net[0].bias[0] = float("nan")          # (every condition reads it)
    with pytest.raises(GANCollapseError, match="loss became nan"):
        fit_model(model, dm, 1, tmp_path)


def test_discriminator_that_always_wins_is_reported(tiny_config, tmp_path):
    dm = _datamodule(tiny_config)
    model = CFGAN(**SMALL, collapse_d_loss=100.0, collapse_patience=2)   # every round counts as D winning
    with pytest.raises(GANCollapseError, match="below 100.0 for 2 rounds"):
        fit_model(model, dm, 5, tmp_path)


def test_generator_that_ignores_its_condition_is_reported(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setattr(Generator, "forward", lambda self, c: self.net(torch.zeros(c.shape)))
    dm = _datamodule(tiny_config)
    with pytest.raises(GANCollapseError, match="same vector for every condition"):
        fit_model(CFGAN(**SMALL), dm, 2, tmp_path)


# -- configuration -------------------------------------------------------------------------------------

def test_item_mode_with_validation_input_is_a_clear_error(tiny_config):
    with pytest.raises(ConfigError, match="needs mode: user"):
        make_config("CFGAN", "tiny", config_dict=_config(tiny_config, mode="item", test_input="train_valid"))


def test_yaml_defaults_are_the_authors_ml100k_settings():
    m = CFGAN()
    h = m.hparams
    assert (h.g_hidden_size, h.d_hidden_size, h.zr_ratio, h.pm_ratio, h.zr_coefficient) == (400, 125, 0.7, 0.7, 0.03)
    assert (h.g_learning_rate, h.d_learning_rate, h.g_batch_size, h.d_batch_size) == (1e-4, 1e-4, 32, 64)
    assert (h.g_steps, h.d_steps, h.g_reg_weight, h.d_reg_weight, h.mode) == (4, 2, 0.001, 0.0, "item")


def test_a_rounds_draws_are_the_same_made_at_once_or_per_minibatch():
    m = sp.random(40, 30, density=0.2, format="csr", random_state=1)
    m.data[:] = 1.0
    rows = SparseRows.of(m, np.flatnonzero(np.diff(m.indptr) > 0), "cpu")
    at_once, per_batch = RoundDraws(rows, 0.7, 9), RoundDraws(rows, 0.7, 9, cache_cells=0)
    assert at_once.all is not None and per_batch.all is None
    for idx in torch.randperm(len(rows)).split(7):
        assert torch.equal(at_once(idx, rows.dense(idx)), per_batch(idx, rows.dense(idx)))


def test_authors_initialisation_xavier_uniform_weights_and_small_uniform_biases():
    torch.manual_seed(0)
    g, d = Generator(300, hidden=400), Discriminator(300, hidden=125)
    for net in (g, d):
        for layer in [m for m in net.modules() if isinstance(m, torch.nn.Linear)]:
            fan_out, fan_in = layer.weight.shape
            bound = (6.0 / (fan_in + fan_out)) ** 0.5
            assert layer.weight.abs().max() <= bound
            # uniform on [-bound, bound] has std bound / sqrt(3) (PyTorch's default would give ~1/sqrt(3 fan_in))
            assert layer.weight.std().item() == pytest.approx(bound / 3 ** 0.5, rel=0.05)
            assert layer.bias.abs().max() <= 0.01 and (layer.bias.numel() == 1 or layer.bias.std() > 0.003)


def test_item_mode_is_the_default_as_in_every_released_setting():
    assert CFGAN().hparams.mode == "item"
    assert CFGAN(mode="user").hparams.mode == "user"
