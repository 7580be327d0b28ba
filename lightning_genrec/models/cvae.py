"""Collaborative Variational Autoencoder: a content VAE tied to matrix factorisation.

Reference:
    Xiaopeng Li and James She. "Collaborative Variational Autoencoder for
    Recommender Systems." KDD 2017.

The model (the paper's, and the authors' ``eelxpeng/CollaborativeVAE``):
    * item j's content x_j in [0, 1]^D (``lightning_genrec.content``) -> inference network
      D -> 200 -> 100 (sigmoid) -> mu, log sigma^2 (K = 50): q(z_j | x_j); generation network
      z -> 100 (its own weights) -> 200 -> D with the inference weights transposed (tied, and the
      first inference bias reused, as the authors do) -> Bernoulli logits;
    * latent users u_i ~ N(0, lambda_u^-1 I); items v_j = v*_j + z_j with the offset
      v*_j ~ N(0, lambda_v^-1 I), so v_j is pulled towards its content code;
    * ratings R_ij ~ N(u_i^T v_j, C_ij^-1), C_ij = a (observed) or b (every other pair);
    * the VAE minimises, per item, sigmoid cross-entropy summed over the D columns
      + beta * KL(q || N(0, I)) + (lambda_v / lambda_r) ||v_j - z_j||^2 (z sampled)
      + reg_weight * sum ||W||^2 over the tied weights (the authors' 2e-4 L2 term);
    * U and V have closed forms given the rest (alternating least squares with the dense
      b-confidence, every unobserved pair included, no negative sampling):
        u_i = (b V^T V + (a - b) V_i^T V_i + lambda_u I)^-1  a sum_{j in i} v_j
        v_j = (b U^T U + (a - b) U_j^T U_j + lambda_v I)^-1 (a sum_{i in j} u_i + lambda_v theta_j)
      with theta_j = E[z_j] = mu(x_j); an item nobody has chosen in training gets
      v_j = (b U^T U + lambda_v I)^-1 lambda_v theta_j, its pairs all unobserved; and, as in
      the authors' code (CTR's before it), the U-step's V^T V runs over the items with training
      interactions only, so the b-confidence of an article nobody chose yet does not push users
      away from it (the paper's formula would sum over every item);
    * schedule per epoch: one pass of VAE minibatches (backprop, Adam 1e-3), theta <- mu(X),
      one ALS sweep (U, then V); V starts at theta; optional pre-training of the content VAE
      (``pretrain_schedule``: see below);
    * prediction: u_i^T v_j = u_i^T (v*_j + E[z_j]).

Which items the model learns from (``content_items``, a data setting: see
``lightning_genrec.content``): by default (outside the cold-start item protocol) every item of
the data set, as the authors do -- the content VAE, its vocabulary and the ALS item step
cover the whole catalogue, rated or not.  Under the cold-start item protocol only the items
with training interactions; the held-out items are then new items.

Where this implementation departs, and why:
    * **New items** (outside what the model learns from: the cold-start protocol's held-out
      items, or any item under ``content_items: train`` without training interactions) never
      enter ALS: v*_j = 0 and v_j = E[z_j], so the score comes from the content alone (the
      prior mean of the offset).  The authors' formula above would treat them as seen and
      rated zero by every user -- which an item that did not exist at training time was not.
    * **U is not stored.** A user's vector is the U-step applied to the user's input row with
      the current V (``fold_in``).  For training users and ``test_input: train`` it is
      exactly the U of an ALS sweep; it also scores users from train + validation rows
      (``test_input: train_valid``).  Each epoch's sweep recomputes U this way before the
      V-step, so the alternation is the authors'; prediction uses u fitted to the final V
      (the authors' U is one V-step older).
    * **Pre-training**, by default (``pretrain_schedule: vae``), trains the whole content VAE
      (reconstruction + KL + L2, masking noise ``pretrain_corruption`` on the input) for
      ``pretrain_epochs`` (20) epochs at ``learning_rate`` (1e-3; ``pretrain_learning_rate`` when
      set).  The authors pre-train layer by layer (``test_vae.py``): a tied denoising autoencoder
      per hidden layer, the latent layer as a small VAE, 50 epochs each, then the whole VAE for
      100 epochs without noise or L2, all at Adam 0.01.  ``pretrain_schedule: layerwise`` with
      ``pretrain_epochs: 100`` and ``pretrain_learning_rate: 0.01`` is that schedule, except that
      every item the model learns from trains each stage (the authors keep a random fifth aside
      to print a validation loss), and masking drops each entry with probability
      ``pretrain_corruption`` (theirs zeroes exactly that share of each row).  It is not the
      default: it costs about seven times the default's pre-training (50 first-layer epochs at
      0.8-1.0 of a whole-VAE epoch each, two cheaper stages and 100 whole-VAE epochs, against
      the default's 20 whole-VAE epochs) and the evidence is split: on CiteULike-a's P = 1 split
      (3 seeds, benchmarks/results/citeulike_cvae.md) it gives Recall@50 / 100 / 300
      0.0940 / 0.1299 / 0.2059 against the default's 0.0673 / 0.1059 / 0.2013, and on ml-100k
      (RecBole's default split, 3 seeds, benchmarks/results/ml100k_cvae.csv) test NDCG@20
      0.2027 against the default's 0.2502.
    * ``anneal_*`` (KL weight, constant 1 by default as in the paper) is available like in
      the other VAEs.
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lightning_genrec.content import ContentData
from lightning_genrec.data import dense
from lightning_genrec.errors import HyperparameterError
from lightning_genrec.hparams import choice, int_list, integer, number, sized_from_data, with_default
from lightning_genrec.models.base import (ANNEAL_CAP, ANNEAL_SCHEDULE, LEARNING_RATE, N_ITEMS, TOPK,
                                         TOTAL_ANNEAL_STEPS, VAEModule, adam)
from lightning_genrec.models.mvae import ACTIVATIONS

log = logging.getLogger(__name__)

PRETRAIN_SCHEDULES = ("vae", "layerwise")


class ContentVAE(nn.Module):
    """The content VAE with tied generation weights: ``forward(x) -> (logits, mu, logvar, z)``."""

    def __init__(self, n_content: int, hidden: Sequence[int] = (200, 100), latent: int = 50,
                 activation: str = "sigmoid"):
        super().__init__()
        dims = [n_content, *hidden]
        self.act = ACTIVATIONS[activation]()
        self.encoder = nn.ModuleList(nn.Linear(d_in, d_out) for d_in, d_out in zip(dims[:-1], dims[1:]))
        self.mu = nn.Linear(dims[-1], latent)
        self.logvar = nn.Linear(dims[-1], latent)
        self.generator_in = nn.Linear(latent, dims[-1])       # the only untied generation layer
        self.out_bias = nn.Parameter(torch.zeros(n_content))
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def encode(self, x: torch.Tensor):
        h = x
        for layer in self.encoder:
            h = self.act(layer(h))
        return self.mu(h), self.logvar(h)                       # (B, K), (B, K)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h = self.act(self.generator_in(z))                      # (B, H_last)
        for k in reversed(range(len(self.encoder))):
            h = h @ self.encoder[k].weight                      # transposed inference weights
            if k > 0:
                h = self.act(h + self.encoder[k - 1].bias)
        return h + self.out_bias                                # (B, D) logits

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None):
        mu, logvar = self.encode(x)
        if noise is None:
            noise = torch.randn_like(mu)
        z = mu + noise * torch.exp(0.5 * logvar)
        return self.decode(z), mu, logvar, z

    def tied_weight_norm(self) -> torch.Tensor:
        return sum(layer.weight.pow(2).sum() for layer in self.encoder)


def vae_terms(net: ContentVAE, logits, mu, logvar, x):
    """(reconstruction, KL, L2): per-item sums, mean over the batch; L2 = sum ||W||^2 of tied weights."""
    recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(dim=1).mean()
    kl = 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0).sum(dim=1).mean()
    return recon, kl, net.tied_weight_norm()


def _epoch_batches(n: int, batch_size: int, g: torch.Generator):
    """Row indices 0..n-1 in a fresh random order (from ``g``), cut into batches."""
    return torch.randperm(n, generator=g).split(batch_size)


def _masked(x: torch.Tensor, corruption: float, g: torch.Generator) -> torch.Tensor:
    """``x`` with each entry set to 0 with probability ``corruption`` (masking noise; ``g`` on the CPU)."""
    keep = (torch.rand(x.shape, generator=g) >= corruption).to(x.device)
    return x * keep


def _check_pretraining_loss(loss: torch.Tensor) -> None:
    if not torch.isfinite(loss):
        raise FloatingPointError(f"CVAE pre-training: the loss became {loss.item()}; lower pretrain_learning_rate "
                                 "(unset, it is learning_rate), or check the item content for NaN/inf.")


def _fit_epochs(opt: torch.optim.Optimizer, epochs: int, n: int, batch_size: int, g: torch.Generator,
                batch_loss, on_epoch=None) -> list[float]:
    """The pre-training loop every stage shares: per epoch, rows 0..n-1 in a fresh order from ``g``
    in batches; ``batch_loss(index)`` gives the batch's loss, ``opt`` takes the step.  Returns
    the mean loss per epoch (``on_epoch(epoch, mean)`` sees each)."""
    losses = []
    with torch.enable_grad():
        for epoch in range(epochs):
            total = 0.0
            for index in _epoch_batches(n, batch_size, g):
                loss = batch_loss(index)
                _check_pretraining_loss(loss)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(index)
            losses.append(total / n)
            if on_epoch is not None:
                on_epoch(epoch, losses[-1])
    return losses


def dae_stage(layer: nn.Linear, act: nn.Module, rows, n: int, epochs: int, batch_size: int, corruption: float,
              lr: float, g: torch.Generator) -> list[float]:
    """One stage of the authors' layer-wise pre-training: ``layer`` as a denoising autoencoder with
    tied weights -- x~ = x masked, h = act(W x~ + b), x^ = sigmoid(W^T h + c) with its own output
    bias c (dropped afterwards, as the authors drop theirs), sigmoid cross-entropy against the clean
    x summed over columns, its own Adam.  ``rows(index)`` gives the stage's input rows (the content,
    or the previous layers' activations), values in [0, 1].  Returns the mean loss per epoch."""
    c = torch.zeros(layer.in_features, device=layer.weight.device, dtype=layer.weight.dtype, requires_grad=True)

    def batch_loss(index):
        x = rows(index)
        logits = act(layer(_masked(x, corruption, g))) @ layer.weight + c
        return F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(dim=1).mean()

    return _fit_epochs(adam([*layer.parameters(), c], lr=lr), epochs, n, batch_size, g, batch_loss)


def latent_stage(net: "ContentVAE", hidden: torch.Tensor, epochs: int, batch_size: int, lr: float,
                 g: torch.Generator) -> list[float]:
    """The last stage of the authors' layer-wise pre-training: the latent layer as a small VAE on the
    top hidden activations ``hidden`` (N, H): mu and log sigma^2 from h, z sampled, h^ =
    sigmoid(generator_in(z)), cross-entropy against h + KL, no masking; trains ``net.mu``,
    ``net.logvar`` and ``net.generator_in`` with their own Adam.  Returns the mean loss per epoch."""
    params = [*net.mu.parameters(), *net.logvar.parameters(), *net.generator_in.parameters()]

    def batch_loss(index):
        h = hidden[index.to(hidden.device)]
        mu, logvar = net.mu(h), net.logvar(h)
        z = mu + torch.randn(mu.shape, generator=g).to(mu.device) * torch.exp(0.5 * logvar)
        recon = F.binary_cross_entropy_with_logits(net.generator_in(z), h, reduction="none").sum(dim=1).mean()
        return recon + 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0).sum(dim=1).mean()

    return _fit_epochs(adam(params, lr=lr), epochs, len(hidden), batch_size, g, batch_loss)


def _mm(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return torch.sparse.mm(x, m) if x.is_sparse else x @ m


def outer_rows(m: torch.Tensor) -> torch.Tensor:
    """``(N, K) -> (N, K*K)``: each row's outer product with itself, flattened."""
    return (m[:, :, None] * m[:, None, :]).reshape(m.shape[0], -1)


def fold_in(x: torch.Tensor, V: torch.Tensor, gram: torch.Tensor, a: float, b: float, lambda_u: float,
            in_gram: torch.Tensor | None = None, V_outer: torch.Tensor | None = None) -> torch.Tensor:
    """The ALS U-step for input rows ``x`` (B, I) (dense or sparse, binary) given item
    vectors ``V`` (I, K) and ``gram`` = V^T V over the items ``in_gram`` ((I,) bool, default
    all; the model passes its items with training interactions):
    u = (b gram + sum_{j in x} w_j v_j v_j^T + lambda_u I)^-1 a sum_{j in x} v_j, with
    w_j = a - b for an item in the gram (its b is already there) and a for any other item in
    the input (e.g. a validation row's item nobody chose in training, under
    ``test_input: train_valid``).  Returns (B, K)."""
    K = V.shape[1]
    if V_outer is None:
        w = torch.full((V.shape[0],), a - b, dtype=V.dtype, device=V.device)
        if in_gram is not None:
            w = torch.where(in_gram, w, torch.full_like(w, a))
        V_outer = outer_rows(V) * w[:, None]
    eye = torch.eye(K, dtype=V.dtype, device=V.device)
    A = (b * gram + lambda_u * eye) + _mm(x, V_outer).view(-1, K, K)             # (B, K, K)
    rhs = a * _mm(x, V)                                                           # (B, K)
    # solve_ex: solve's arithmetic without its check of the result (a GPU would wait for it per batch);
    # A is symmetric positive definite (lambda_u > 0), so the check cannot fail
    return torch.linalg.solve_ex(A, rhs)[0]


def item_step(R: torch.Tensor, U: torch.Tensor, theta: torch.Tensor, learned: torch.Tensor, a: float, b: float,
              lambda_v: float) -> torch.Tensor:
    """The ALS V-step: ``R`` (U, I) sparse binary, ``U`` (U, K), ``theta`` (I, K).  The items the
    model learns from (``learned``, (I,) bool) get their closed form -- for one without training
    interactions (b U^T U + lambda_v I)^-1 lambda_v theta_j; the others (new items) keep
    v_j = theta_j.  Only the learned items' K x K systems are built and solved."""
    K = U.shape[1]
    Rt = R.t().coalesce() if R.is_sparse else R.t()
    rows = learned.nonzero().squeeze(1)
    if len(rows) < len(learned):                  # the cold-start protocol: new items are not solved
        Rt = Rt.index_select(0, rows)
    eye = torch.eye(K, dtype=U.dtype, device=U.device)
    A = (b * U.t() @ U + lambda_v * eye) + (a - b) * _mm(Rt, outer_rows(U)).view(-1, K, K)   # (L, K, K)
    rhs = a * _mm(Rt, U) + lambda_v * theta[rows]                                            # (L, K)
    return theta.index_copy(0, rows, torch.linalg.solve(A, rhs))


class CVAE(VAEModule):
    """Collaborative VAE (Li & She, KDD 2017) as a LightningModule.

    Trains on items: each epoch is one pass of content-VAE minibatches over the items it learns
    from (every item by default; those with training interactions under the cold-start item
    protocol), then one ALS sweep of U and V on the whole training matrix.  The data form is
    :class:`~lightning_genrec.content.ContentData` (item content from the config's
    ``content_fields``, ``content_min_count``, ``content_items``).
    """

    data_class = ContentData

    HYPERPARAMETERS = (
        N_ITEMS,
        sized_from_data("n_content", "width D of the item content rows."),
        int_list("mlp_hidden_size", [200, 100], "inference network hidden layers; generation mirrors them, tied."),
        integer("latent_dimension", 50, "K: size of z and of the user / item vectors."),
        choice("activation", "sigmoid", ACTIVATIONS, "hidden-layer activation (the authors': sigmoid)."),
        number("lambda_u", 0.1, "precision of the user prior.", low_open=True),
        number("lambda_v", 10.0, "precision of the item offset prior (how tightly v_j follows z_j).", low_open=True),
        number("lambda_r", 1.0, "rating precision scale in the coupling weight lambda_v / lambda_r.", low_open=True),
        number("confidence_a", 1.0, "confidence of an observed interaction.", low_open=True),
        number("confidence_b", 0.01, "confidence of every unobserved user-item pair (at most confidence_a)."),
        number("reg_weight", 2e-4, "L2 weight on the tied network weights."),
        LEARNING_RATE,
        choice("pretrain_schedule", "vae", PRETRAIN_SCHEDULES,
               "content-VAE pre-training before the joint training: vae (the whole VAE, input masked by "
               "pretrain_corruption) or layerwise (the authors': a tied denoising autoencoder per hidden layer, "
               "then the latent layer, pretrain_layer_epochs each, then the whole VAE without noise or L2)."),
        integer("pretrain_epochs", 20, "epochs of whole-VAE pre-training (0 = none; the authors' layerwise "
                "schedule: 100).", low=0),
        integer("pretrain_layer_epochs", 50, "layerwise only: epochs of each layer-wise stage (the authors': "
                "50)."),
        number("pretrain_learning_rate", None, "Adam step size while pre-training; unset (~): learning_rate "
               "(the authors' layerwise schedule: 0.01).", low_open=True, optional=True),
        number("pretrain_corruption", 0.3, "masking noise on the pre-training input (layerwise: on each layer-wise "
               "stage's input).", high=1.0, high_open=True),
        integer("pretrain_batch_size", 128, "items per pre-training batch."),
        with_default(ANNEAL_CAP, 1.0),
        with_default(TOTAL_ANNEAL_STEPS, 0),
        with_default(ANNEAL_SCHEDULE, "constant"),
        TOPK,
    )

    def __init__(self, **hparams):
        super().__init__(**hparams)
        self.net: ContentVAE | None = None
        self._cache: dict = {}
        if self.hparams.n_items is not None and self.hparams.n_content is not None:
            self.build()

    @classmethod
    def check_together(cls, h: dict) -> None:
        if h["pretrain_schedule"] == "layerwise" and h["activation"] != "sigmoid":
            raise HyperparameterError(f"pretrain_schedule='layerwise' needs activation='sigmoid' (got "
                                      f"{h['activation']!r}): each layer-wise stage reconstructs the previous "
                                      "layer's activations with cross-entropy, which needs values in [0, 1]. Use "
                                      "activation='sigmoid' (the authors') or pretrain_schedule='vae'.")
        if h["confidence_b"] > h["confidence_a"]:
            raise HyperparameterError(f"invalid hyperparameters confidence_b={h['confidence_b']!r} > confidence_a="
                                      f"{h['confidence_a']!r}: an observed interaction must weigh at least as much "
                                      "as an unobserved pair.")

    def build(self) -> None:
        h = self.hparams
        if h.n_content is None:
            raise RuntimeError("CVAE does not know the width of the item content: pass n_content=... or train "
                               "with a RecBoleDataModule(model='CVAE').")
        self.net = ContentVAE(h.n_content, h.mlp_hidden_size, h.latent_dimension, h.activation)
        K = h.latent_dimension
        # V (v_j = theta_j for new items); which items the model learns from (the data's
        # learned_items) and which have training interactions (the U-step's gram runs over these);
        # whether V was initialised / the VAE pre-trained (so a resumed fit skips both)
        self.register_buffer("item_factors", torch.zeros(h.n_items, K))
        self.register_buffer("learned", torch.zeros(h.n_items, dtype=torch.bool))
        self.register_buffer("rated", torch.zeros(h.n_items, dtype=torch.bool))
        self.register_buffer("progress", torch.zeros(2, dtype=torch.bool))   # [pretrained, factors ready]
        self.register_buffer("sweeps", torch.zeros((), dtype=torch.long))    # epochs whose ALS sweep ran

    def attach_data(self, data) -> None:
        if not isinstance(data, ContentData):
            raise ValueError("CVAE needs item content: build its data with RecBoleDataModule(model='CVAE') "
                             "(ContentData), not the interaction-only data of another model.")
        width = data.content.dim
        if self.hparams.n_content is None:
            self.hparams.n_content = width
            if self.hparams.n_items is not None:
                self.build()
        elif self.hparams.n_content != width:
            raise ValueError(f"CVAE was built for {self.hparams.n_content} content columns but the data has "
                             f"{width}; use the same content_fields / content_min_count, or n_content=None.")
        super().attach_data(data)
        self._cache = {}
        self.learned.zero_()
        self.learned[torch.from_numpy(data.learned_items())] = True
        self.rated.zero_()
        self.rated[torch.from_numpy(data.train_items())] = True

    # -- data on the model's device ----------------------------------------------
    def _content(self) -> torch.Tensor:
        cached = self._cache.get("content")
        if cached is None or cached.device != self.device or cached.dtype != self.net.mu.weight.dtype:
            dtype = self.net.mu.weight.dtype
            self._cache["content"] = torch.from_numpy(self._data.content.matrix).to(self.device, dtype)
        return self._cache["content"]

    def _train_matrix(self) -> torch.Tensor:
        if "R" not in self._cache or self._cache["R"].device != self.device:
            coo = self._data.train.tocoo()
            index = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
            self._cache["R"] = torch.sparse_coo_tensor(index, torch.ones(coo.nnz, dtype=torch.float64),
                                                       coo.shape, check_invariants=True).coalesce().to(self.device)
        return self._cache["R"]

    def _require_data(self, what: str) -> None:
        if self._data is None:
            raise RuntimeError(f"CVAE {what} needs its training data: use a RecBoleDataModule(model='CVAE') or "
                               "call model.attach_data(data) first.")

    # -- the collaborative part ---------------------------------------------------
    @torch.no_grad()
    def item_means(self) -> torch.Tensor:
        """theta = E[z_j | x_j] for every item, ``(I, K)`` float64."""
        self._require_data("item_means")
        return self.net.encode(self._content())[0].double()

    @torch.no_grad()
    def content_factors(self, content: torch.Tensor) -> torch.Tensor:
        """(B, K) float64 item factors of items known only by their ``content`` (B, D), in the columns
        of the training content: E[z | x], the inference network's mean (a new item has no
        collaborative offset epsilon yet)."""
        return self.net.encode(content.to(self.device, self.net.mu.weight.dtype))[0].double()

    def _gram(self, V: torch.Tensor) -> torch.Tensor:
        Vr = V[self.rated]
        return Vr.t() @ Vr

    @torch.no_grad()
    def user_factors(self, x: torch.Tensor) -> torch.Tensor:
        """u for input rows ``x`` (B, I), given the current V (the ALS U-step); ``(B, K)`` float64."""
        h = self.hparams
        key = (self.item_factors.data_ptr(), self.item_factors._version, self.rated.data_ptr(), self.rated._version)
        if self._cache.get("fold_key") != key:
            V = self.item_factors.double()
            a, b = h.confidence_a, h.confidence_b
            w = torch.where(self.rated, torch.full_like(V[:, 0], a - b), torch.full_like(V[:, 0], a))
            self._cache.update(fold_key=key, V=V, V_outer=outer_rows(V) * w[:, None], gram=self._gram(V))
        c = self._cache
        x = x.double()
        if not x.is_sparse and x.dim() == 2 and x.shape[1] > 64:
            # rows are sparse (ML-20M: 0.5 % dense): the K x K systems cost nnz x K^2 sparse, B x I x K^2 dense
            x = x.to_sparse()
        return fold_in(x, c["V"], c["gram"], h.confidence_a, h.confidence_b, h.lambda_u, V_outer=c["V_outer"])

    @torch.no_grad()
    def als_sweep(self) -> None:
        """theta <- mu(X); U <- U-step(R, V); V <- V-step(R, U, theta)."""
        self._require_data("als_sweep")
        h = self.hparams
        theta = self.item_means()
        R = self._train_matrix()
        U = self.user_factors(R)
        V = item_step(R, U, theta, self.learned, h.confidence_a, h.confidence_b, h.lambda_v)
        self.item_factors.copy_(V.float())

    @torch.no_grad()
    def init_factors(self) -> None:
        """V <- theta (the authors' start)."""
        self.item_factors.copy_(self.item_means().float())
        self.progress[1] = True

    def pretrain(self) -> None:
        """Pre-train the content VAE alone on the items it learns from (``pretrain_schedule``), with
        fresh Adams at ``pretrain_learning_rate`` (unset: ``learning_rate``) and a generator seeded by
        ``torch.initial_seed()``.

        ``vae``: the whole VAE for ``pretrain_epochs`` (denoising: masked input, clean target; the
        loss with its L2 term).  ``layerwise`` (the authors' ``test_vae.py``): each hidden layer as
        a tied denoising autoencoder on the previous layer's activations, then the latent layer as
        a small VAE on the top activations (``pretrain_layer_epochs`` each), then the whole VAE for
        ``pretrain_epochs`` without noise or L2, its output bias starting from zero."""
        self._require_data("pretrain")
        h = self.hparams
        X = self._content()
        items = torch.from_numpy(self._data.learned_items())
        g = torch.Generator().manual_seed(torch.initial_seed() % (2 ** 63))
        layerwise = h.pretrain_schedule == "layerwise"
        if layerwise:
            self.pretrain_layers(X, items, g)

        def batch_loss(index):
            x = X[items[index].to(X.device)]
            x_in = x if layerwise else _masked(x, h.pretrain_corruption, g)
            noise = torch.randn(len(index), h.latent_dimension, generator=g).to(x.device)
            logits, mu, logvar, _ = self.net(x_in, noise)
            recon, kl, l2 = vae_terms(self.net, logits, mu, logvar, x)
            return recon + kl if layerwise else recon + kl + h.reg_weight * l2

        _fit_epochs(adam(self.net.parameters(), lr=self._pretrain_lr()), h.pretrain_epochs, len(items),
                    h.pretrain_batch_size, g, batch_loss,
                    lambda epoch, loss: log.info("CVAE pre-training epoch %d/%d: loss %.4f", epoch + 1,
                                                 h.pretrain_epochs, loss))
        self.progress[0] = True

    def _pretrain_lr(self) -> float:
        h = self.hparams
        return h.learning_rate if h.get("pretrain_learning_rate") is None else h.pretrain_learning_rate

    def pretrain_layers(self, X: torch.Tensor, items: torch.Tensor, g: torch.Generator) -> list[list[float]]:
        """The authors' layer-wise stages (see :meth:`pretrain`) on the content rows ``X[items]``;
        returns each stage's mean loss per epoch (hidden layers first, the latent layer last)."""
        h, net = self.hparams, self.net
        n, losses = len(items), []
        rows = lambda index: X[items[index].to(X.device)]                     # noqa: E731
        for k, layer in enumerate(net.encoder):
            losses.append(dae_stage(layer, net.act, rows, n, h.pretrain_layer_epochs, h.pretrain_batch_size,
                                    h.pretrain_corruption, self._pretrain_lr(), g))
            log.info("CVAE layer-wise pre-training, hidden layer %d: loss %.4f -> %.4f", k + 1, losses[-1][0],
                     losses[-1][-1])
            with torch.no_grad():                                             # the next stage's input rows
                hidden = torch.cat([net.act(layer(rows(index))) for index in torch.arange(n).split(4096)])
            rows = lambda index, hidden=hidden: hidden[index.to(hidden.device)]   # noqa: E731
        losses.append(latent_stage(net, hidden, h.pretrain_layer_epochs, h.pretrain_batch_size,
                                   self._pretrain_lr(), g))
        log.info("CVAE layer-wise pre-training, latent layer: loss %.4f -> %.4f", losses[-1][0], losses[-1][-1])
        return losses

    # -- Lightning hooks -----------------------------------------------------------
    def on_train_start(self) -> None:
        super().on_train_start()
        self._require_data("training")
        if not bool(self.progress[0]) and (self.hparams.pretrain_epochs > 0
                                           or self.hparams.pretrain_schedule == "layerwise"):
            self.pretrain()
            self._same_weights_on_every_process()
        if not bool(self.progress[1]):
            self.init_factors()
        if int(self.sweeps) < self.trainer.current_epoch:
            # resumed from a checkpoint saved on an epoch's last batch before its sweep ran
            self.als_sweep()
            self.sweeps.fill_(self.trainer.current_epoch)

    def _same_weights_on_every_process(self) -> None:
        """Under DDP, every process continues from rank 0's pre-trained VAE (pre-training runs
        outside DDP, and processes seeded differently would otherwise diverge; from here on
        DDP keeps the weights equal and each ALS sweep is the same computation everywhere)."""
        if self.trainer.world_size <= 1:
            return
        state = self.trainer.strategy.broadcast({k: v.cpu() for k, v in self.net.state_dict().items()}, src=0)
        self.net.load_state_dict(state)

    def training_step(self, batch, batch_idx):
        h = self.hparams
        x, items = batch["content"], batch["item"]                     # (B, D), (B,)
        logits, mu, logvar, z = self.net(x)
        recon, kl, l2 = vae_terms(self.net, logits, mu, logvar, x)
        coupling = (self.item_factors[items] - z).pow(2).sum(dim=1).mean()
        beta = self.kl_weight()
        loss = recon + beta * kl + (h.lambda_v / h.lambda_r) * coupling + h.reg_weight * l2
        self.log_elbo(loss, recon, kl, beta, x.shape[0])
        self.log("train/coupling", coupling, on_step=False, on_epoch=True, batch_size=x.shape[0])
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if batch_idx == self.trainer.num_training_batches - 1:   # before Lightning validates the epoch
            self.als_sweep()
            self.sweeps.fill_(self.current_epoch + 1)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        rated, learned = prefix + "rated", prefix + "learned"
        if rated in state_dict and learned not in state_dict:   # saved before content_items: it learned
            state_dict[learned] = state_dict[rated].clone()      # from the items with training interactions
        elif learned in state_dict and rated not in state_dict:  # saved while the gram ran over the learned
            state_dict[rated] = state_dict[learned].clone()      # items: keep scoring as it was trained
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage in ("validate", "test", "predict") and not bool(self.progress[1]):
            raise RuntimeError("CVAE has not been fitted: its item factors are still zeros, so every score would "
                               "be 0. Train it first (trainer.fit) or load a fitted checkpoint.")

    def score(self, batch):
        u = self.user_factors(dense(batch["input"]))                    # (B, K)
        return (u @ self.item_factors.double().t()).float()             # (B, I)
