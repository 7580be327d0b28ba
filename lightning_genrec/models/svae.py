"""SVAE: the sequential variational autoencoder for collaborative filtering.

Reference:
    Noveen Sachdeva, Giuseppe Manco, Ettore Ritacco and Vikram Pudi.
    "Sequential Variational Autoencoders for Collaborative Filtering." WSDM 2019.

What is the paper's (and the authors' notebook ``noveens/svae_cf``):
    * item embedding (256) -> one-layer GRU (200) over the user's time-ordered
      history -> at every step Linear 200->150 + tanh -> Linear 150->2x64 giving
      mu_t and a_t -> z_t = mu_t + eps * exp(a_t) -> Linear 64->150 + tanh -> Linear
      150->|I| logits: a multinomial over all items per step.  The released code samples
      with exp(a_t) as the standard deviation while its KL term reads a_t as log sigma^2
      (so the sample is wider than the posterior the KL describes); ``latent_noise:
      authors`` (the default) keeps that, ``latent_noise: elbo`` samples with exp(a_t / 2),
      the consistent ELBO;
    * the authors' initialisation: Xavier-normal weights in the MLP layers (PyTorch's own
      for the embedding, the GRU and the biases);
    * the input is the sequence without its last item; the target of step t is
      the multi-hot set of the **next k items** (``next_k``, 4 as in the authors'
      code; fewer near the end of the sequence; k=1 is plain next-item);
    * per sequence: NLL = -sum over steps and target items of log softmax, divided
      by k (summed over steps, not averaged); KL summed over the latent
      dimensions, averaged over steps; loss = NLL + beta * KL, beta annealed
      linearly to 0.2 (the same schedule code as MVAE).  (The authors divide by
      the number of targets at the first step, which is k unless the sequence
      has at most k items after its first; here it is always k, so a short
      sequence's NLL is not scaled up.);
    * Adam, learning rate 1e-3, weight decay 5e-3;
    * a user's scores are the last step's logits.

Where we differ from the authors' code, on purpose:
    * batches of padded sequences instead of one sequence at a time.  The GRU
      runs left to right, so right-padding never reaches a real step, and the
      loss masks padded steps; a batch's loss is the mean of the per-sequence
      losses above, so batch size 1 gives the per-sequence loss of the authors'
      loop (with the divisor above, for sequences of at most
      ``MAX_ITEM_LIST_LENGTH`` steps);
    * z = mu when scoring (the authors' notebook samples at test time);
    * beta follows the global step (the authors' counter restarts every epoch);
    * long training sequences are cut into windows of ``MAX_ITEM_LIST_LENGTH``
      input steps (see :mod:`lightning_genrec.sequences`), matching RecBole's
      truncation of scoring histories.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from lightning_genrec.hparams import choice, integer, with_default
from lightning_genrec.models.base import ANNEALING, LEARNING_RATE, N_ITEMS, TOPK, WEIGHT_DECAY, VAEModule
from lightning_genrec.sequences import SequenceData


NOISE = ("authors", "elbo")


class SeqVAE(nn.Module):
    """The torch core: ``forward(seq) -> (logits, mu, logvar)`` at every step of ``seq`` (B, T).

    ``noise``: how the second half ``a`` of the encoder's output scales the sample: ``authors``
    z = mu + eps * exp(a) (the released code), ``elbo`` z = mu + eps * exp(a / 2); the KL reads
    ``a`` as log sigma^2 either way."""

    def __init__(self, n_items: int, embedding_size: int = 256, rnn_size: int = 200, hidden_size: int = 150,
                 latent: int = 64, noise: str = "authors"):
        super().__init__()
        if noise not in NOISE:
            raise ValueError(f"noise must be one of {NOISE}, got {noise!r}")
        self.noise_scale = 1.0 if noise == "authors" else 0.5
        self.embedding = nn.Embedding(n_items, embedding_size, padding_idx=0)
        self.gru = nn.GRU(embedding_size, rnn_size, batch_first=True)
        self.encoder = nn.Sequential(nn.Linear(rnn_size, hidden_size), nn.Tanh(), nn.Linear(hidden_size, 2 * latent))
        self.decoder = nn.Sequential(nn.Linear(latent, hidden_size), nn.Tanh(), nn.Linear(hidden_size, n_items))
        for layer in (*self.encoder, *self.decoder):       # the authors' initialisation: Xavier-normal weights
            if isinstance(layer, nn.Linear):
                nn.init.xavier_normal_(layer.weight)

    def states(self, seq: torch.Tensor) -> torch.Tensor:
        """GRU outputs ``(B, T, R)``; step t depends on ``seq[:, :t + 1]`` only."""
        h, _ = self.gru(self.embedding(seq))
        return h

    def latent(self, h: torch.Tensor):
        mu, logvar = self.encoder(h).chunk(2, dim=-1)
        if self.training:
            z = mu + torch.randn_like(mu) * torch.exp(self.noise_scale * logvar)
        else:
            z = mu
        return z, mu, logvar

    def forward(self, seq: torch.Tensor):
        z, mu, logvar = self.latent(self.states(seq))
        return self.decoder(z), mu, logvar                          # (B, T, I), (B, T, Z), (B, T, Z)

    def last_step_logits(self, seq: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, I)`` after each sequence's last real item (z = mu outside training).
        An empty history (length 0) is scored from the GRU's initial state."""
        h = self.states(seq) if seq.shape[1] > 0 else None
        idx = (length - 1).clamp_min(0)
        if h is None:
            last = torch.zeros(seq.shape[0], self.gru.hidden_size, device=seq.device)
        else:
            last = h[torch.arange(seq.shape[0], device=seq.device), idx]
            last = last.masked_fill((length == 0).unsqueeze(1), 0.0)
        z, _, _ = self.latent(last)
        return self.decoder(z)


def next_k_targets(seq: torch.Tensor, steps: int, k: int) -> torch.Tensor:
    """``(B, steps, k)``: at step t the items ``seq[:, t+1 : t+1+k]``; 0 (padding) where the
    sequence ends and for repeats of an item already in the same step's set (a multi-hot
    target counts an item once)."""
    padded = F.pad(seq, (0, k + 1))
    idx = torch.arange(steps, device=seq.device).unsqueeze(1) + 1 + torch.arange(k, device=seq.device)  # (T, k)
    targets = padded[:, idx]                                                                          # (B, T, k)
    if k > 1:
        same = targets.unsqueeze(-1) == targets.unsqueeze(-2)                                         # (B, T, k, k)
        earlier = torch.ones(k, k, dtype=torch.bool, device=seq.device).tril(-1)
        targets = targets.masked_fill((same & earlier).any(-1), 0)
    return targets


def svae_loss(logits, mu, logvar, targets, length, k: int, beta: float):
    """(loss, nll, kl), each the batch mean of the per-sequence terms (see the module docstring).

    logits (B, T, I); mu, logvar (B, T, Z); targets (B, T, k) item ids, 0 = none; length (B,)."""
    steps = torch.arange(logits.shape[1], device=logits.device)
    real = steps.unsqueeze(0) < length.unsqueeze(1)                                  # (B, T)
    hit = (targets > 0) & real.unsqueeze(-1)                                         # (B, T, k)
    log_p = logits.gather(2, targets) - logits.logsumexp(dim=2, keepdim=True)        # (B, T, k)
    nll = -(log_p * hit).sum(dim=(1, 2)) / k                                         # (B,)
    kl_step = 0.5 * (-logvar + logvar.exp() + mu.pow(2) - 1.0).sum(dim=2)            # (B, T)
    kl = (kl_step * real).sum(dim=1) / length.clamp_min(1)                           # (B,)
    return (nll + beta * kl).mean(), nll.mean(), kl.mean()


class SVAE(VAEModule):
    """SVAE as a LightningModule.

    Trains on :class:`~lightning_genrec.sequences.SequenceData`: padded windows of
    each user's time-ordered history (``train_batch_size`` windows a batch).
    """

    data_class = SequenceData
    sequential = True

    HYPERPARAMETERS = (
        N_ITEMS,
        integer("embedding_size", 256, "item embedding size."),
        integer("rnn_size", 200, "GRU hidden size."),
        integer("hidden_size", 150, "the MLP layer before and after the latent layer."),
        integer("latent_dimension", 64, "size of z_t."),
        integer("next_k", 4, "items after each step that are its targets (1 = the next item only)."),
        choice("latent_noise", "authors", NOISE, "authors: z = mu + eps * exp(a), as the released code samples; elbo: "
                                                 "z = mu + eps * exp(a / 2), the sample the KL term describes (a: "
                                                 "the encoder's log-variance output, read as log sigma^2 by the KL)."),
        *ANNEALING,
        LEARNING_RATE,
        with_default(WEIGHT_DECAY, 5e-3),
        TOPK,
    )

    def __init__(self, **hparams):
        super().__init__(**hparams)
        self.net: SeqVAE | None = None
        if self.hparams.n_items is not None:
            self.build()

    def build(self) -> None:
        h = self.hparams
        self.net = SeqVAE(h.n_items, h.embedding_size, h.rnn_size, h.hidden_size, h.latent_dimension, h.latent_noise)

    def attach_data(self, data) -> None:
        super().attach_data(data)
        if hasattr(data, "lookahead"):   # training windows must carry k targets past their end
            data.lookahead = max(data.lookahead, self.hparams.next_k)

    def forward(self, seq: torch.Tensor):
        return self.net(seq)

    def training_step(self, batch, batch_idx):
        seq, length = batch["seq"], batch["length"]
        steps = batch["steps"] if "steps" in batch else int(length.max())   # (a host int from the data)
        logits, mu, logvar = self.net(seq[:, :steps])
        targets = next_k_targets(seq, steps, self.hparams.next_k)
        beta = self.kl_weight()
        loss, nll, kl = svae_loss(logits, mu, logvar, targets, length, self.hparams.next_k, beta)
        self.log_elbo(loss, nll, kl, beta, seq.shape[0])
        return loss

    def score(self, batch):
        return self.net.last_step_logits(batch["seq"], batch["length"])   # (B, I)
