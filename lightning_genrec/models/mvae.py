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

Training and scoring read each row by its non-zero entries only (:class:`~lightning_genrec.data.NonZeros`,
served so by :class:`~lightning_genrec.data.SparseRowData`): the normalisation, the dropout, the first
layer (:class:`~lightning_genrec.models.layers.SparseInputLinear`) and the likelihood's sum over the row (:func:`multinomial_nll`)
compute the same functions without the zeros; only the decoder's logits are dense.

The annealing horizon is stated in passes over the training users (``anneal_epochs``), not
in minibatches: the paper's 200000 minibatches were sized for ML-20M and leave beta near 0 on
a small data set.  The default horizon, 200 passes, is the number of epochs the paper trains for
(chosen over 100 on validation: ``benchmarks/results/mvae_defaults.md``, ``mvae_defaults_heldout.md``).
``total_anneal_steps`` keeps the paper's unit when set.  Early stopping waits
until beta reaches its cap (``stop_after_anneal``; see :class:`~lightning_genrec.models.base.VAEModule`).
The default z has 64 dimensions (``latent_dimension: 200`` is the paper's network): 64 won on
validation (``benchmarks/results/mvae_defaults.md``).

``latent_dimension`` is the size of z (RecBole's MultiVAE halves it).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from lightning_genrec.data import NonZeros, SparseRowData, nonzeros
from lightning_genrec.hparams import choice, int_list, integer, number
from lightning_genrec.models.base import ANNEALING_BY_EPOCHS, LEARNING_RATE, N_ITEMS, TOPK, WEIGHT_DECAY, VAEModule
from lightning_genrec.models.layers import SparseInputLinear

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "sigmoid": nn.Sigmoid, "leakyrelu": nn.LeakyReLU}


def _mlp(dims: Sequence[int], activation: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(d_in, d_out))
        if i < len(dims) - 2:  # no activation after the last layer
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


#: rows of the logits turned into probabilities at a time, in place: a few MB, so the temporary
#: comes from the heap instead of a fresh ``B x I`` mapping (page faults) every step
_SOFTMAX_ROWS = 32


class _MultinomialNLL(torch.autograd.Function):
    """Per row, -sum_i x_i log softmax(logits)_i, with x read at its non-zero entries only.

    The same function as ``-(F.log_softmax(logits, 1) * x).sum(1)``, term by term
    (x_i (lse - logit_i), lse the row's log-sum-exp), and its gradient softmax * sum(x) - x.
    The softmax is made once, forward; lse comes from it at the row's largest logit
    (lse = max - log softmax_max, where softmax_max >= 1 / I cannot underflow); backward scales it
    and subtracts x at its entries.  The dense form makes and reads several more ``B x I``
    tensors (the log-softmax, its product with x, their gradients).

    ``consume``: the softmax overwrites ``logits`` (block by block) and the gradient overwrites
    the softmax, so no ``B x I`` tensor is allocated at all: for a caller that does not read
    the logits again (MVAE's training step: the decoder's last layer, a linear one, keeps its
    input, not its output); backward can then run once only.  Nothing detects a later read of
    the overwritten logits: they hold the softmax.  Not twice differentiable (it raises)."""

    @staticmethod
    def forward(ctx, logits, rows, cols, values, consume):
        top, arg = logits.max(dim=1)                                            # (B,)
        picked = logits[rows, cols]                                             # (nnz,) before any overwrite
        if consume:
            p = logits
            for block in p.split(_SOFTMAX_ROWS):
                block.copy_(torch.softmax(block, dim=1))
        else:
            p = torch.softmax(logits, dim=1)                                    # (B, I)
        lse = top - p.gather(1, arg[:, None]).squeeze(1).log()
        nll = torch.zeros_like(lse).index_add_(0, rows, (lse[rows] - picked) * values)
        counts = torch.zeros_like(lse).index_add_(0, rows, values)              # sum_i x_i
        ctx.save_for_backward(p, counts, rows, cols, values)
        ctx.consume, ctx.spent = consume, False
        return nll

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_nll):
        if ctx.spent:
            raise RuntimeError("multinomial_nll(consume=True) overwrote its softmax with the gradient: its "
                               "backward runs once; use consume=False to backpropagate through it again.")
        p, counts, rows, cols, values = ctx.saved_tensors
        scale = (grad_nll * counts)[:, None]
        if ctx.consume:
            grad, ctx.spent = p.mul_(scale), True
        else:
            grad = p * scale
        grad.index_put_((rows, cols), -(grad_nll[rows] * values), accumulate=True)  # a repeated entry adds up
        return grad, None, None, None, None


def multinomial_nll(logits: torch.Tensor, x: "torch.Tensor | NonZeros", consume: bool = False) -> torch.Tensor:
    """(B,) -sum_i x_i log softmax(logits)_i of each row (x dense or as :class:`NonZeros`).

    ``consume=True`` overwrites ``logits`` (with their softmax) to allocate nothing of their size:
    only for non-leaf logits the caller does not read again.  Half-precision logits (mixed-precision
    training) are computed in a float32 copy, as autocast runs ``log_softmax`` (``consume`` then
    overwrites the copy, and the caller's logits stay as they were)."""
    if consume and logits.is_leaf and logits.requires_grad:
        raise ValueError("multinomial_nll(consume=True) would overwrite a leaf tensor that requires grad; "
                         "pass consume=False, or logits computed from it.")
    nz = nonzeros(x)
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return _MultinomialNLL.apply(logits, nz.rows, nz.cols, nz.values.to(logits.dtype), consume)


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

    def forward(self, x: "torch.Tensor | NonZeros"):
        """``x``: (B, I) rows, dense or as :class:`NonZeros`."""
        h = nonzeros(x).normalize()                                 # unit rows
        if self.training and self.dropout > 0:
            h = h.dropout(self.dropout)                             # input dropout, training only
        mu, logvar = self.encoder(h).chunk(2, dim=1)                # (B, Z), (B, Z)
        if self.training:
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        else:
            z = mu
        return self.decoder(z), mu, logvar                          # (B, I) logits


def mvae_loss(logits, mu, logvar, x, beta: float, consume: bool = False):
    """(loss, nll, kl): multinomial NLL and Gaussian KL, summed per user, mean over the batch
    (``x``: the input rows, dense or as :class:`NonZeros`; ``consume``: see :func:`multinomial_nll`)."""
    nll = multinomial_nll(logits, x, consume).mean()
    kl = 0.5 * (-logvar + logvar.exp() + mu.pow(2) - 1.0).sum(dim=1).mean()
    return nll + beta * kl, nll, kl


class MVAE(VAEModule):
    """Mult-VAE as a LightningModule (defaults: the paper's)."""

    data_class = SparseRowData                                      # training rows as NonZeros
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
        x = nonzeros(batch["input"])                                # (B, I) rows, by their entries
        logits, mu, logvar = self.net(x)
        beta = self.kl_weight()
        loss, nll, kl = mvae_loss(logits, mu, logvar, x, beta, consume=True)   # logits not read again
        self.log_elbo(loss, nll, kl, beta, x.n_rows)
        return loss

    def score(self, batch):
        logits, _, _ = self.net(batch["input"])                     # z = mu outside training
        return logits                                               # (B, I)
