"""Mult-VAE: variational autoencoder with a multinomial likelihood.

Reference:
    Dawen Liang, Rahul G. Krishnan, Matthew D. Hoffman and Tony Jebara.
    "Variational Autoencoders for Collaborative Filtering." WWW 2018.

What is the paper's (and the authors' notebook ``dawenl/vae_cf``):
    * encoder I -> 600 -> (mu 200 | logvar 200), decoder 200 -> 600 -> I, tanh
      between hidden layers only (not on mu, logvar or the logits);
    * input: each user row L2-normalised, then dropout (keep 0.5), training only;
    * z = mu + eps * exp(logvar / 2), eps ~ N(0, I) while training, z = mu in evaluation;
    * loss = -mean_u sum_i x_ui log softmax(logits)_i + beta * mean_u KL, KL summed
      over latent dimensions; beta = min(anneal_cap, step / total_anneal_steps)
      updated every minibatch, first minibatch beta = 0;
    * Xavier-uniform weights, biases N(0, 0.001); Adam 1e-3; 500 users a batch;
      one row per user per epoch.

The first layer reads only each row's non-zero entries (:class:`SparseInputLinear`): the
same product, without the zeros.

The annealing horizon is stated in passes over the training users (``anneal_epochs``), not
in minibatches: the paper's 200000 minibatches were sized for ML-20M and leave beta near 0 on
a small data set.  ``total_anneal_steps`` keeps the paper's unit when set.  Early stopping waits
until beta reaches its cap (``stop_after_anneal``; see :class:`~lightning_genrec.models.base.VAEModule`).
The default z has 64 dimensions (``latent_dimension: 200`` is the paper's network): 64 won on
validation (``benchmarks/results/mvae_defaults.md``).

``latent_dimension`` is the size of z (RecBole's MultiVAE halves it).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lightning_genrec.hparams import choice, int_list, integer, number
from lightning_genrec.models.base import ANNEALING_BY_EPOCHS, LEARNING_RATE, N_ITEMS, TOPK, WEIGHT_DECAY, VAEModule

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "sigmoid": nn.Sigmoid, "leakyrelu": nn.LeakyReLU}


def _mlp(dims: Sequence[int], activation: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(d_in, d_out))
        if i < len(dims) - 2:  # no activation after the last layer
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


def dropout_nonzeros(h: torch.Tensor, p: float) -> torch.Tensor:
    """``F.dropout(h, p)`` for a mostly-zero ``h``, drawing random numbers only for
    its non-zero entries: the same distribution (dropping a zero changes nothing),
    about 15x less sampling on ml-100k's 6 %-dense rows."""
    rows, cols = h.nonzero(as_tuple=True)
    keep = torch.rand(rows.shape[0], device=h.device) >= p
    mask = torch.zeros_like(h)
    mask[rows[keep], cols[keep]] = 1.0 / (1.0 - p)
    return h * mask


class SparseInputLinear(nn.Module):
    """``nn.Linear`` for mostly-zero input rows: ``x @ weight + bias`` summed over each row's non-zero
    entries only (``embedding_bag`` over their columns, weighted by their values).

    The same function as ``nn.Linear(in_features, out_features)`` (whose weight is this ``weight``
    transposed): a user's row of items is 0.5 % dense at ML-20M size, where this forward and
    backward take about 1/5 of the dense product's time (1/2 on ml-100k's 6 %-dense rows).  The
    weight is stored (in, out), so the rows it reads are contiguous; a state dict holding the
    ``nn.Linear`` layout (out, in) loads as well."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.bias = nn.Parameter(torch.empty(out_features))

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "SparseInputLinear":
        layer = cls(linear.in_features, linear.out_features)
        with torch.no_grad():
            layer.weight.copy_(linear.weight.t())
            layer.bias.copy_(linear.bias)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows, cols = x.nonzero(as_tuple=True)                       # row-major: rows ascending
        offsets = torch.searchsorted(rows, torch.arange(x.shape[0], device=x.device))
        return F.embedding_bag(cols, self.weight, offsets, mode="sum",
                               per_sample_weights=x[rows, cols].to(self.weight.dtype)) + self.bias

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "weight"
        stored = state_dict.get(key)
        if stored is not None and stored.shape == (self.out_features, self.in_features) != self.weight.shape:
            state_dict[key] = stored.t()                             # an nn.Linear checkpoint
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


class MultVAE(nn.Module):
    """The torch core: ``forward(x) -> (logits, mu, logvar)``."""

    def __init__(self, n_items: int, hidden: Sequence[int] = (600,), latent: int = 200,
                 dropout: float = 0.5, activation: str = "tanh"):
        super().__init__()
        self.latent, self.dropout = latent, dropout
        self.encoder = _mlp([n_items, *hidden, 2 * latent], activation)
        self.decoder = _mlp([latent, *reversed(hidden), n_items], activation)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.normal_(m.bias, std=0.001)
        # the input rows are mostly zeros: the first layer reads their non-zero entries only
        self.encoder[0] = SparseInputLinear.from_linear(self.encoder[0])

    def forward(self, x: torch.Tensor):
        h = F.normalize(x, dim=1)                                   # (B, I) unit rows
        if self.training and self.dropout > 0:
            h = dropout_nonzeros(h, self.dropout)                   # input dropout, training only
        mu, logvar = self.encoder(h).chunk(2, dim=1)                # (B, Z), (B, Z)
        if self.training:
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        else:
            z = mu
        return self.decoder(z), mu, logvar                          # (B, I) logits


def mvae_loss(logits, mu, logvar, x, beta: float):
    """(loss, nll, kl): multinomial NLL and Gaussian KL, summed per user, mean over the batch."""
    nll = -(F.log_softmax(logits, dim=1) * x).sum(dim=1).mean()
    kl = 0.5 * (-logvar + logvar.exp() + mu.pow(2) - 1.0).sum(dim=1).mean()
    return nll + beta * kl, nll, kl


class MVAE(VAEModule):
    """Mult-VAE as a LightningModule (defaults: the paper's)."""

    HYPERPARAMETERS = (
        N_ITEMS,
        int_list("mlp_hidden_size", [600], "encoder hidden layers; the decoder mirrors them."),
        integer("latent_dimension", 64, "size of z (not halved, unlike RecBole's MultiVAE; the paper's 200 was "
                                        "sized for 20k-item data, 64 won on validation: benchmarks/results/"
                                        "mvae_defaults.md)."),
        number("dropout_prob", 0.5, "input dropout probability (the paper keeps 0.5).", high=1.0, high_open=True),
        choice("activation", "tanh", ACTIVATIONS, "activation between hidden layers."),
        *ANNEALING_BY_EPOCHS,
        LEARNING_RATE,
        WEIGHT_DECAY,
        TOPK,
    )

    def __init__(self, **hparams):
        super().__init__(**hparams)
        self.net: MultVAE | None = None
        if self.hparams.n_items is not None:
            self.build()

    def build(self) -> None:
        h = self.hparams
        self.net = MultVAE(h.n_items, h.mlp_hidden_size, h.latent_dimension, h.dropout_prob, h.activation)

    def forward(self, x: torch.Tensor):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x = batch["input"]                                          # (B, I)
        logits, mu, logvar = self.net(x)
        beta = self.kl_weight()
        loss, nll, kl = mvae_loss(logits, mu, logvar, x, beta)
        self.log_elbo(loss, nll, kl, beta, x.shape[0])
        return loss

    def score(self, batch):
        logits, _, _ = self.net(batch["input"])                     # z = mu outside training
        return logits                                               # (B, I)
