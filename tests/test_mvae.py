"""MVAE is Liang et al.'s Mult-VAE: architecture, likelihood, sampling, training unit, errors."""
import math

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from lightning_genrec import MVAE
from recbole_ext import RecBoleDataModule
from lightning_genrec.data import train_loader
from lightning_genrec.models.mvae import MultVAE, SparseInputLinear, mvae_loss


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


def test_sparse_input_layer_is_the_linear_layer_it_replaces():
    torch.manual_seed(0)
    dense = nn.Linear(40, 7)
    sparse = SparseInputLinear.from_linear(dense)
    x = (torch.rand(6, 40) < 0.2).float() * torch.rand(6, 40)
    x[2] = 0.0                                                        # a row with no entries: the bias
    # the same sums in another order: float32 tolerance
    assert torch.allclose(sparse(x), dense(x), atol=1e-6)
    out_grad = torch.randn(6, 7)
    sparse(x).backward(out_grad)
    dense(x).backward(out_grad)
    assert torch.allclose(sparse.weight.grad, dense.weight.grad.t(), atol=1e-6)
    assert torch.allclose(sparse.bias.grad, dense.bias.grad, atol=1e-6)
    # an nn.Linear state dict (out, in) loads, transposed
    other = SparseInputLinear(40, 7)
    other.load_state_dict(dense.state_dict())
    assert torch.equal(other.weight, dense.weight.t())


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
    net.encoder[0].register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach()))
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


def test_trains_over_users_one_row_each_per_epoch(tiny_config):
    dm = RecBoleDataModule("tiny", config_dict=tiny_config)
    dm.setup()
    users = torch.cat([b["user"] for b in train_loader(dm.data, batch_size=7)])
    assert sorted(users.tolist()) == list(range(1, 61))       # 60 users, each once (0 is padding)
    batch = next(iter(train_loader(dm.data, batch_size=7)))
    assert batch["input"].shape == (7, dm.n_items)
    assert torch.equal(batch["input"].sum(1), torch.as_tensor(dm.data.train[batch["user"].numpy()].sum(1)).view(-1))


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
    from lightning_genrec.models.mvae import dropout_nonzeros

    torch.manual_seed(0)
    h = torch.zeros(400, 300)
    h[:, :30] = 0.5
    out = dropout_nonzeros(h, 0.5)
    assert torch.equal(out[:, 30:], torch.zeros(400, 270))              # zeros stay zero
    kept = out[:, :30]
    assert set(kept.unique().tolist()) == {0.0, 1.0}                     # kept entries scaled by 1 / (1 - p)
    assert abs(float((kept > 0).float().mean()) - 0.5) < 0.02            # each kept with probability 1 - p
    assert abs(float(out.sum() / h.sum()) - 1.0) < 0.03                  # unbiased, like F.dropout
