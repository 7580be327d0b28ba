"""MVAE is Liang et al.'s Mult-VAE: architecture, likelihood, sampling, training unit, errors."""
import math

import numpy as np
import pytest
import scipy.sparse as sp
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from lightning_genrec import MVAE
from recbole_ext import RecBoleDataModule
from lightning_genrec.data import train_loader
from lightning_genrec.data import NonZeros
from lightning_genrec.models.layers import SparseInputLinear
from lightning_genrec.models.mvae import MultVAE, multinomial_nll, mvae_loss


def _trainer(tmp_path, **kw):
    return pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                      default_root_dir=str(tmp_path), **kw)


def test_architecture_is_I_600_200_600_I_with_tanh_between_hidden_layers_only():
    net = MultVAE(n_items=50)
    enc, dec = list(net.encoder), list(net.decoder)
    assert [type(m) for m in enc] == [SparseInputLinear, nn.Tanh, nn.Linear]
    assert [type(m) for m in dec] == [nn.Linear, nn.Tanh, nn.Linear]
    assert (enc[0].in_features, enc[0].out_features, enc[2].out_features) == (50, 600, 400)  # mu | logvar
    assert (dec[0].in_features, dec[0].out_features, dec[2].out_features) == (200, 600, 50)
    relu = MultVAE(n_items=50, hidden=(64, 32), latent=16, activation="relu")
    assert [m.out_features for m in relu.encoder if hasattr(m, "out_features")] == [64, 32, 32]
    assert any(isinstance(m, nn.ReLU) for m in relu.encoder)


def test_latent_dimension_is_the_size_of_z():
    net = MultVAE(n_items=30, latent=7)
    _, mu, logvar = net(torch.rand(4, 30))
    assert mu.shape == logvar.shape == (4, 7)


def test_z_is_mu_in_evaluation_and_sampled_with_unit_noise_in_training():
    torch.manual_seed(0)
    net = MultVAE(n_items=40, dropout=0.0)
    x = (torch.rand(8, 40) < 0.3).float()
    net.eval()
    a, mu, _ = net(x)
    b, _, _ = net(x)
    assert torch.equal(a, b) and torch.allclose(a, net.decoder(mu))
    # training: force logvar = 0 and mu = 0, so z = eps must be N(0, I) (RecBole uses std 0.01)
    net.train()
    seen = []
    net.decoder[0].register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach()))
    with torch.no_grad():
        net.encoder[-1].weight.zero_()
        net.encoder[-1].bias.zero_()
    for _ in range(50):
        net(x)
    z = torch.cat(seen)                                                 # (400, 200)
    assert abs(float(z.std()) - 1.0) < 0.05 and abs(float(z.mean())) < 0.05


def test_input_is_l2_normalised_then_dropped_out_in_training_only():
    torch.manual_seed(0)
    net = MultVAE(n_items=200, dropout=0.5)
    x = torch.zeros(64, 200)
    x[:, :40] = 3.0                                   # any scale: rows are L2-normalised first
    seen = []
    # the first layer reads the rows by their non-zero entries: seen densely here
    net.encoder[0].register_forward_hook(lambda m, inp, out: seen.append(inp[0].to_dense().detach()))
    net.eval()
    net(x)
    unit = F.normalize(x, dim=1)
    assert torch.allclose(seen[-1], unit)             # evaluation: normalised, no dropout
    net.train()
    net(x)
    h = seen[-1][:, :40]
    assert torch.equal(seen[-1][:, 40:], torch.zeros(64, 160))
    kept = h > 0
    assert 0.4 < float(kept.float().mean()) < 0.6      # about half dropped
    assert torch.allclose(h[kept], (2 * unit[:, :40])[kept])  # survivors scaled by 1 / (1 - p), after normalising


def test_loss_is_multinomial_nll_plus_beta_kl_summed_per_user():
    torch.manual_seed(0)
    logits, mu, logvar = torch.randn(3, 6), torch.randn(3, 4), torch.randn(3, 4)
    x = (torch.rand(3, 6) < 0.5).float()
    loss, nll, kl = mvae_loss(logits, mu, logvar, x, beta=0.3)
    manual_nll = -sum((torch.log_softmax(logits[u], 0) * x[u]).sum() for u in range(3)) / 3
    manual_kl = sum(0.5 * (-logvar[u] + logvar[u].exp() + mu[u] ** 2 - 1).sum() for u in range(3)) / 3
    assert torch.allclose(nll, manual_nll) and torch.allclose(kl, manual_kl)
    assert torch.allclose(loss, manual_nll + 0.3 * manual_kl)


def test_nll_by_nonzero_entries_is_the_dense_log_softmax_form_value_and_gradient():
    """The likelihood reads x at its entries only; value and gradient against the dense formula
    (float32 tolerance: the same terms, summed in another order)."""
    torch.manual_seed(0)
    logits = (5 * torch.randn(7, 300)).requires_grad_()
    x = (torch.rand(7, 300) < 0.05).float() * torch.randint(1, 4, (7, 300)).float()   # counts too
    x[3] = 0.0                                                                          # an empty row
    x[5, 0] = 1.0
    with torch.no_grad():
        logits[5, 0] = -60.0               # an observed item far below the rest: no underflow
    dense = -(F.log_softmax(logits, 1) * x).sum(1)
    ours = multinomial_nll(logits, x).detach()
    assert torch.allclose(ours, dense, rtol=1e-5, atol=1e-4)
    assert float(ours[3]) == 0.0 and float(ours[5]) > 60
    g = torch.randn(7)
    (want,) = torch.autograd.grad(dense, logits, g)
    (got,) = torch.autograd.grad(multinomial_nll(logits, NonZeros.of(x)), logits, g)
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.equal(got[3], torch.zeros(300))
    # and as mvae_loss sees it, in float64 (the gradient check of torch itself)
    l64 = logits.detach().double().requires_grad_()
    nz = NonZeros.of(x.double())
    assert torch.autograd.gradcheck(lambda z: multinomial_nll(z, nz), (l64,))


def test_nll_consuming_the_logits_is_the_same_and_backpropagates_once():
    torch.manual_seed(0)
    x = (torch.rand(70, 120) < 0.1).float()                     # more rows than one softmax block
    base = 4 * torch.randn(70, 120)
    a, b = base.clone().requires_grad_(), base.clone().requires_grad_()
    kept = multinomial_nll(a * 1.0, x)
    logits = b * 1.0                                            # a non-leaf the loss may overwrite
    consumed = multinomial_nll(logits, x, consume=True)
    assert torch.allclose(consumed, kept, atol=1e-5)
    assert torch.allclose(logits.sum(1), torch.ones(70), atol=1e-5)   # overwritten: now the softmax
    g = torch.rand(70)
    (ga,), (gb,) = torch.autograd.grad(kept, a, g), torch.autograd.grad(consumed, b, g, retain_graph=True)
    assert torch.allclose(ga, gb, atol=1e-6)
    with pytest.raises(RuntimeError, match="runs once"):
        torch.autograd.grad(consumed, b, g)


def test_nll_adds_up_a_repeated_entry_and_refuses_what_it_cannot_do():
    torch.manual_seed(0)
    logits = torch.randn(2, 6, dtype=torch.float64, requires_grad=True)
    # row 0 lists column 3 twice (values 1 and 2): the same as one entry of 3, value and gradient
    twice = NonZeros(torch.tensor([0, 0, 1]), torch.tensor([3, 3, 5]), torch.tensor([1.0, 2.0, 1.0]).double(),
                     torch.tensor([0, 2]), 6)
    x = torch.zeros(2, 6, dtype=torch.float64)
    x[0, 3], x[1, 5] = 3.0, 1.0
    g = torch.tensor([0.7, -1.3], dtype=torch.float64)
    (got,) = torch.autograd.grad(multinomial_nll(logits, twice), logits, g)
    (want,) = torch.autograd.grad(-(F.log_softmax(logits, 1) * x).sum(1), logits, g)
    assert torch.allclose(got, want)
    # not twice differentiable: it says so instead of returning a wrong second derivative
    (first,) = torch.autograd.grad(multinomial_nll(logits, x).sum(), logits, create_graph=True)
    with pytest.raises(RuntimeError):
        torch.autograd.grad(first.sum(), logits)
    with pytest.raises(ValueError, match="leaf"):
        multinomial_nll(logits, x, consume=True)


def test_nll_of_half_precision_logits_is_computed_in_float32():
    torch.manual_seed(0)
    x = (torch.rand(5, 400) < 0.05).float()
    logits = (3 * torch.randn(5, 400)).bfloat16().requires_grad_()
    nll = multinomial_nll(logits * 1, x, consume=True)
    assert nll.dtype == torch.float32
    want = -(F.log_softmax(logits.float(), 1) * x).sum(1)
    assert torch.allclose(nll, want, rtol=1e-5, atol=1e-4)
    nll.sum().backward()
    assert logits.grad.dtype == torch.bfloat16


def test_a_training_step_is_the_papers_dense_arithmetic():
    """MVAE's step by non-zero entries (sparse batch, in-place softmax) against the formulas written
    densely (F.normalize, dropout mask, x @ W, log_softmax * x): same loss and gradients, float32
    tolerance.  The dropout and z draws are made in the same order, so the same seed gives the same
    noise."""
    torch.manual_seed(0)
    net = MultVAE(n_items=90, hidden=(40,), latent=8, dropout=0.5)
    net.train()
    x = (torch.rand(12, 90) < 0.15).float()
    x[7] = 0.0
    torch.manual_seed(1)
    nz = NonZeros.of(x)
    logits, mu, logvar = net(nz)
    loss, _, _ = mvae_loss(logits, mu, logvar, nz, beta=0.4, consume=True)
    ours = torch.autograd.grad(loss, list(net.parameters()))

    torch.manual_seed(1)
    h = F.normalize(x, dim=1)
    rows, cols = x.nonzero(as_tuple=True)
    keep = torch.rand(rows.shape[0]) >= 0.5
    mask = torch.zeros_like(x)
    mask[rows[keep], cols[keep]] = 2.0
    first = net.encoder[0]
    enc = torch.tanh((h * mask) @ first.weight + first.bias)
    mu_d, logvar_d = net.encoder[2](enc).chunk(2, dim=1)
    z = mu_d + torch.randn_like(mu_d) * torch.exp(0.5 * logvar_d)
    logits_d = net.decoder(z)
    nll = -(F.log_softmax(logits_d, 1) * x).sum(1).mean()
    kl = 0.5 * (-logvar_d + logvar_d.exp() + mu_d.pow(2) - 1.0).sum(1).mean()
    want = torch.autograd.grad(nll + 0.4 * kl, list(net.parameters()))
    assert torch.allclose(loss, nll + 0.4 * kl, atol=1e-5)
    for got, ref in zip(ours, want):
        assert torch.allclose(got, ref, atol=1e-5)


def test_nonzero_rows_normalise_drop_out_and_round_trip_like_the_dense_rows():
    torch.manual_seed(0)
    x = (torch.rand(9, 50) < 0.2).float() * torch.rand(9, 50)
    x[4] = 0.0
    nz = NonZeros.of(x)
    assert nz.n_rows == 9 and nz.width == 50 and torch.equal(nz.to_dense(), x)
    assert torch.equal(nz.offsets, torch.searchsorted(nz.rows, torch.arange(9)))
    assert torch.allclose(nz.normalize().to_dense(), F.normalize(x, dim=1))
    assert torch.allclose(nz.row_sums(), x.sum(1))
    moved = nz.to(torch.float64)                                 # values cast, indices stay integers
    assert moved.values.dtype == torch.float64 and moved.rows.dtype == moved.offsets.dtype == torch.int64
    repeated = sp.csr_matrix((np.array([1.0, 2.0, 4.0], np.float32), np.array([3, 3, 1]), np.array([0, 2, 3])),
                             shape=(2, 5))                       # not canonical: column 3 twice in row 0
    assert torch.equal(NonZeros.from_csr(repeated).to_dense(), torch.as_tensor(repeated.toarray()))
    assert NonZeros.from_csr(repeated).values.shape == (2,)
    csr = sp.csr_matrix(x.numpy())
    csr.data[0] = 0.0                                            # an explicit zero is not an entry
    from_csr = NonZeros.from_csr(csr)
    want = NonZeros.of(torch.as_tensor(csr.toarray()))
    for field in ("rows", "cols", "values", "offsets"):
        assert torch.equal(getattr(from_csr, field), getattr(want, field)), field
    dropped = nz.dropout(0.25).to_dense()
    kept = dropped != 0
    assert torch.allclose(dropped[kept], (x / 0.75)[kept]) and not kept[x == 0].any()


def test_trains_over_users_one_row_each_per_epoch(tiny_config):
    dm = RecBoleDataModule("tiny", config_dict=tiny_config)
    dm.setup()
    users = torch.cat([b["user"] for b in train_loader(dm.data, batch_size=7)])
    assert sorted(users.tolist()) == list(range(1, 61))       # 60 users, each once (0 is padding)
    batch = next(iter(train_loader(dm.data, batch_size=7)))
    # MVAE's training rows come by their entries, never dense: exactly the users' training rows
    assert isinstance(batch["input"], NonZeros) and batch["input"].n_rows == 7
    rows = torch.as_tensor(dm.data.train[batch["user"].numpy()].toarray())
    assert torch.equal(batch["input"].to_dense(), rows) and rows.shape == (7, dm.n_items)
    from_dense = NonZeros.of(rows)
    assert torch.equal(batch["input"].offsets, from_dense.offsets) and torch.equal(batch["input"].rows, from_dense.rows)


def test_loss_falls_and_ranking_beats_chance(tiny_config, tmp_path):
    pl.seed_everything(0)
    dm = RecBoleDataModule("tiny", config_dict=tiny_config, train_batch_size=16)
    model = MVAE(mlp_hidden_size=[64], latent_dimension=16, learning_rate=1e-2, topk=[5, 10])
    trainer = _trainer(tmp_path, max_epochs=40, num_sanity_val_steps=0)
    losses = []

    class Record(pl.Callback):
        def on_train_epoch_end(self, trainer, module):
            losses.append(float(trainer.callback_metrics["train/nll"]))

    trainer.callbacks.append(Record())
    trainer.fit(model, datamodule=dm)
    assert losses[-1] < 0.8 * losses[0]
    test = trainer.test(model, datamodule=dm, verbose=False)[0]
    # 4 taste groups of 20 items; chance recall@10 on 60 non-history items is ~0.17
    assert test["test/recall@10"] > 0.4


def test_nan_loss_stops_and_says_where(tiny_config, tmp_path):
    dm = RecBoleDataModule("tiny", config_dict=tiny_config, train_batch_size=16)
    model = MVAE(mlp_hidden_size=[16], latent_dimension=4)

    class Poison(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if trainer.global_step == 5:
                with torch.no_grad():
                    module.net.encoder[0].weight.fill_(math.nan)

    trainer = _trainer(tmp_path, max_epochs=5, callbacks=[Poison()])
    with pytest.raises(FloatingPointError, match=r"at step 5 \(epoch 1\)"):
        trainer.fit(model, datamodule=dm)


def test_without_data_the_model_asks_for_n_items(tmp_path):
    loader = torch.utils.data.DataLoader([{"input": torch.zeros(3)}])
    with pytest.raises(RuntimeError, match="n_items"):
        _trainer(tmp_path, max_epochs=1).fit(MVAE(), loader)


def test_dropout_on_nonzeros_has_dropouts_distribution():
    torch.manual_seed(0)
    h = torch.zeros(400, 300)
    h[:, :30] = 0.5
    out = NonZeros.of(h).dropout(0.5).to_dense()
    assert torch.equal(out[:, 30:], torch.zeros(400, 270))              # zeros stay zero
    kept = out[:, :30]
    assert set(kept.unique().tolist()) == {0.0, 1.0}                     # kept entries scaled by 1 / (1 - p)
    assert abs(float((kept > 0).float().mean()) - 0.5) < 0.02            # each kept with probability 1 - p
    assert abs(float(out.sum() / h.sum()) - 1.0) < 0.03                  # unbiased, like F.dropout


def test_a_model_reading_whole_rows_scores_an_mvae_data_modules_batch(tiny_config):
    """The data module's default form (MVAE's) serves input rows by their entries; a model that
    multiplies whole rows (CVAE, LARA) reads them densely; CFGAN reads either."""
    from lightning_genrec import CFGAN
    from lightning_genrec.data import dense

    dm = RecBoleDataModule("tiny", config_dict=tiny_config)
    dm.setup()
    batch = dm.data.rows(dm.data.split("test").users[:5], "test")
    assert isinstance(batch["input"], NonZeros)
    torch.manual_seed(0)
    cfgan = CFGAN(n_items=dm.n_items, mode="user", g_hidden_size=8, d_hidden_size=4).eval()
    rows = batch["input"].to_dense()
    assert torch.equal(dense(batch["input"]), rows) and dense(rows) is rows
    # G's first layer reads NonZeros by their entries, dense rows by the product: float32 tolerance
    assert torch.allclose(cfgan.score(batch), cfgan.score({**batch, "input": rows}), atol=1e-6)
