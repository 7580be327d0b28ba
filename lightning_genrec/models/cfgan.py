"""CFGAN: vector-wise GAN collaborative filtering with zero-reconstruction and partial masking.

Reference:
    Dong-Kyu Chae, Jin-Soo Kang, Sang-Wook Kim and Jung-Tae Lee. "CFGAN: A Generic
    Collaborative Filtering Framework based on Generative Adversarial Networks." CIKM 2018.

The model (the paper's final design, ZR + PM, and the authors' released TF code):
    * rows are purchase vectors: users' rows over items (``mode: user``, the default) or
      items' columns over users (``mode: item``, iCFGAN, which the authors' released
      settings use); c is a row of the training matrix;
    * generator G(c): c -> hidden (sigmoid) -> a real-valued vector over all columns,
      linear output, no noise input (the authors feed the condition only);
    * discriminator D(x, c): concat(c, x) -> hidden (sigmoid) -> one logit, the
      probability that x is a real purchase vector given c;
    * every round ("epoch" of the authors' loop), for each row, ``zr_ratio`` and
      ``pm_ratio`` of its unobserved entries are drawn (two independent samples);
    * D minimises BCE(D(c, c), 1) + BCE(D(c, G(c) * m), 0) + d_reg_weight * ||theta_D||^2 / 2,
      where m = the observed entries plus the PM sample (partial masking), G detached;
    * G minimises BCE(D(c, G(c) * m), 1) + zr_coefficient * mean_rows sum_{j in ZR} G(c)_j^2
      (zero-reconstruction on the *unmasked* output) + g_reg_weight * ||theta_G||^2 / 2;
    * each round: ``d_steps`` passes of D minibatches (``d_batch_size`` rows), then ``g_steps``
      passes of G minibatches (``g_batch_size`` rows); separate Adam optimizers (1e-4);
    * recommendation: items ranked by G(c_u) (user mode) or by the user's entry of G(c_j)
      over the items j (item mode); training items excluded.

Defaults are the authors' released ML-100K settings (G 400, D 125, one hidden layer each,
ZR 70 %, PM 70 %, alpha 0.03, G batch 32 / D batch 64, 4 G and 2 D passes a round,
reg_G 0.001, reg_D 0); those were released for the item-based mode.  One Lightning
epoch is one round: the authors' 1000 "epochs" are 1000 / g_steps = 250 rounds.

Where this implementation departs, and why:
    * **Model selection** is on a validation split (RecBole's), once per round; the authors'
      loop evaluates the *test* set after every G pass and reports a picked epoch.
    * ZR and PM are two independent draws, as the paper describes them.  The authors' code
      reseeds numpy with the wall-clock second before each draw, so a row's ZR and PM draws
      (same pool, same size) coincide in practice; ours come from torch's seeded generator
      (reproducible), and each pass shuffles the rows afresh.
    * A round trains on the rows that have training interactions; the authors' loop also
      feeds all-zero rows (in item mode, items without training interactions).
    * Training runs the whole round inside one ``training_step`` (manual optimization, the
      two optimizers alternating as in the authors' loop), so it runs on one device; a
      multi-process strategy is refused with a clear error.
    * **Collapse detection** (not in the authors' code): a non-finite loss, a discriminator
      loss below ``collapse_d_loss`` for ``collapse_patience`` rounds in a row, or a generator
      whose output no longer depends on its condition stops training with
      :class:`GANCollapseError` instead of evaluating a collapsed model.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from lightning_genrec.hparams import choice, integer, number, sized_from_data, with_default
from lightning_genrec.models.base import N_ITEMS, TOPK
from lightning_genrec.models.gan import COLLAPSE, D_LEARNING_RATE, G_LEARNING_RATE, GANCollapseError, RoundData, RoundGAN

MODES = ("user", "item")


def _mlp(d_in: int, hidden: int, layers: int, d_out: int) -> nn.Sequential:
    mods: list[nn.Module] = []
    for i in range(layers):
        mods += [nn.Linear(d_in if i == 0 else hidden, hidden), nn.Sigmoid()]
    mods.append(nn.Linear(hidden if layers else d_in, d_out))
    return nn.Sequential(*mods)


class Generator(nn.Module):
    """G(c) -> (B, N) real-valued scores; sigmoid hidden layers, linear output, no noise."""

    def __init__(self, n: int, hidden: int = 400, layers: int = 1):
        super().__init__()
        self.net = _mlp(n, hidden, layers, n)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return self.net(c)


class Discriminator(nn.Module):
    """D(x, c) -> (B,) logits that x is the real purchase vector of condition c."""

    def __init__(self, n: int, hidden: int = 125, layers: int = 1):
        super().__init__()
        self.net = _mlp(2 * n, hidden, layers, 1)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([c, x], dim=1)).squeeze(1)


def sample_unobserved(rows: torch.Tensor, ratio: float, generator: torch.Generator) -> torch.Tensor:
    """(R, N) bool: for each row, floor(ratio * #unobserved) of its zero entries, uniformly
    without replacement (what the authors' per-row ``np.random.choice`` draws)."""
    observed = rows > 0
    n_pick = torch.floor((~observed).sum(dim=1) * ratio).long()                 # (R,)
    keys = torch.rand(rows.shape, generator=generator).to(rows.device)
    keys = keys.masked_fill(observed, 2.0)                                        # observed entries last
    order = keys.argsort(dim=1)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(rows.shape[1], device=rows.device).expand_as(order))
    return ranks < n_pick[:, None]


def d_loss_fn(D: Discriminator, c, fake_masked):
    """BCE(D(c, c), 1) + BCE(D(c, G(c) * m), 0), each averaged over the batch."""
    real, fake = D(c, c), D(fake_masked, c)
    return (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
            + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))


def g_loss_fn(D: Discriminator, c, out, mask, zr, alpha: float):
    """BCE(D(c, G(c) * m), 1) + alpha * mean_rows sum_{j in ZR} G(c)_j^2 (on the unmasked output)."""
    fake = D(out * mask, c)
    loss = F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
    return loss + alpha * (out.pow(2) * zr).sum(dim=1).mean() if alpha else loss


class CFGAN(RoundGAN):
    """CFGAN (Chae et al., CIKM 2018) as a LightningModule with manual optimization."""

    HYPERPARAMETERS = (
        N_ITEMS,
        sized_from_data("n_users", "number of users (RecBole's user_num)."),
        choice("mode", "user", MODES, "user: rows are users' purchase vectors; item: iCFGAN, rows are items' "
                                      "vectors over users (the mode of the authors' released settings)."),
        integer("g_hidden_size", 400, "generator hidden units."),
        integer("d_hidden_size", 125, "discriminator hidden units."),
        integer("g_layers", 1, "generator hidden layers.", low=0),
        integer("d_layers", 1, "discriminator hidden layers.", low=0),
        number("zr_ratio", 0.7, "share of each row's unobserved entries drawn for zero-reconstruction, per round.",
               high=1.0),
        number("pm_ratio", 0.7, "share of each row's unobserved entries drawn for partial masking, per round.",
               high=1.0),
        number("zr_coefficient", 0.03, "alpha: weight of the zero-reconstruction term in G's loss."),
        G_LEARNING_RATE,
        D_LEARNING_RATE,
        number("g_reg_weight", 0.001, "L2 weight on the generator (times ||theta||^2 / 2)."),
        number("d_reg_weight", 0.0, "L2 weight on the discriminator."),
        integer("g_batch_size", 32, "rows per generator minibatch."),
        integer("d_batch_size", 64, "rows per discriminator minibatch."),
        integer("g_steps", 4, "generator passes over the rows per round."),
        integer("d_steps", 2, "discriminator passes over the rows per round (they come first)."),
        *COLLAPSE,
        with_default(TOPK, [5, 20]),
    )

    def __init__(self, **hparams):
        super().__init__(**hparams)
        self.automatic_optimization = False
        self.generator: Generator | None = None
        self.discriminator: Discriminator | None = None
        self._cache: dict = {}
        h = self.hparams
        if h.n_items is not None and (h.mode == "user" or h.n_users is not None):
            self.build()

    # -- shape ---------------------------------------------------------------------------
    @property
    def width(self) -> int:
        """Length of a row: items (user mode) or users (item mode)."""
        h = self.hparams
        return h.n_items if h.mode == "user" else h.n_users

    def build(self) -> None:
        h = self.hparams
        if h.mode == "item" and h.n_users is None:
            raise RuntimeError("CFGAN mode 'item' needs the number of users: pass n_users=... or train with a "
                               "RecBoleDataModule.")
        self.generator = Generator(self.width, h.g_hidden_size, h.g_layers)
        self.discriminator = Discriminator(self.width, h.d_hidden_size, h.d_layers)
        self.register_d_wins()

    def attach_data(self, data) -> None:
        h = self.hparams
        if h.n_users is None:
            h.n_users = data.n_users
            if h.mode == "item" and h.n_items is not None and self.generator is None:
                self.build()
        elif h.mode == "item" and h.n_users != data.n_users:
            raise ValueError(f"CFGAN (item mode) was built for {h.n_users} users but the data has "
                             f"{data.n_users}; build it for this dataset (n_users=None sizes it).")
        super().attach_data(data)
        self._cache = {}

    def _matrix(self) -> torch.Tensor:
        """The training matrix as dense rows on the model's device: (U, I) in user mode, (I, U) in
        item mode, every id (RecBole's padding id 0 included: an all-zero row)."""
        cached = self._cache.get("matrix")
        if cached is None or cached.device != self.device:
            if self._data is None:
                raise RuntimeError("CFGAN needs its training data: use a RecBoleDataModule or call "
                                   "model.attach_data(data) first.")
            m = self._data.train if self.hparams.mode == "user" else self._data.train.T.tocsr()
            cached = torch.from_numpy(m.toarray()).float().to(self.device)
            self._cache["matrix"] = cached
        return cached

    def _rows(self) -> torch.Tensor:
        """The rows a round trains on: users (or items) with at least one training interaction."""
        cached = self._cache.get("rows")
        matrix = self._matrix()
        if cached is None or cached.device != matrix.device:
            cached = matrix[matrix.sum(dim=1) > 0]
            self._cache["rows"] = cached
        return cached

    # -- training: one round per step -------------------------------------------------------
    def configure_optimizers(self):
        """Two Adams.  The authors' L2 term reg * ||theta||^2 / 2 in the loss has the gradient
        reg * theta, which is exactly what torch's (coupled, not AdamW) ``weight_decay`` adds."""
        h = self.hparams
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=h.g_learning_rate, weight_decay=h.g_reg_weight)
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=h.d_learning_rate, weight_decay=h.d_reg_weight)
        return opt_g, opt_d

    def training_step(self, batch, batch_idx):
        """One round (see :mod:`~lightning_genrec.models.gan`): new ZR / PM draws, D's passes, G's passes."""
        h = self.hparams
        opt_g, opt_d = self.optimizers()
        rows = self._rows()                                                     # (R, N) conditions c = real rows
        g = self.round_generator()
        zr = sample_unobserved(rows, h.zr_ratio, g).float()                     # (R, N) zero-reconstruction entries
        mask = ((rows > 0) | sample_unobserved(rows, h.pm_ratio, g)).float()   # (R, N) observed + partial masking

        # discriminator: real rows against G's masked rows, G held fixed
        self.toggle_optimizer(opt_d)
        d_losses = []
        for idx in self.minibatches(len(rows), h.d_batch_size, h.d_steps, g):
            c = rows[idx]
            with torch.no_grad():
                fake = self.generator(c)                                        # (B, N)
            d_losses.append(self.step(opt_d, d_loss_fn(self.discriminator, c, fake * mask[idx]), "discriminator"))
        self.untoggle_optimizer(opt_d)

        # generator: fool D on the masked rows, and push the ZR entries to 0; D held fixed
        self.toggle_optimizer(opt_g)
        g_losses = []
        for idx in self.minibatches(len(rows), h.g_batch_size, h.g_steps, g):
            c = rows[idx]
            loss = g_loss_fn(self.discriminator, c, self.generator(c), mask[idx], zr[idx], h.zr_coefficient)
            g_losses.append(self.step(opt_g, loss, "generator"))
        self.untoggle_optimizer(opt_g)

        self._cache.pop("item_key", None)                                       # G changed: item scores are stale
        d_mean, _ = self.log_round(d_losses, g_losses)
        self._check_collapse(d_mean, rows)

    @torch.no_grad()
    def _check_collapse(self, d_mean: float, rows: torch.Tensor) -> None:
        self._detect_collapse(d_mean, self.generator(rows[: min(len(rows), 256)]),
                              "Try a smaller d_learning_rate, fewer d_steps, or a larger d_reg_weight")

    # -- scoring -----------------------------------------------------------------------------
    def score(self, batch):
        if self.hparams.mode == "user":
            return self.generator(batch["input"])                               # (B, I)
        # item mode: every item's row through G once per set of weights, then the users' columns
        key = tuple((p.data_ptr(), p._version) for p in self.generator.parameters())
        if self._cache.get("item_key") != key:
            with torch.no_grad():
                self._cache["item_scores"] = self.generator(self._matrix()).t().contiguous()   # (U, I)
            self._cache["item_key"] = key
        scores = self._cache["item_scores"]
        return scores[batch["user"].to(scores.device)]                          # (B, I)

    def on_validation_epoch_start(self) -> None:
        self._cache.pop("item_key", None)   # weights may have been replaced without a version bump

    def on_test_epoch_start(self) -> None:
        self._cache.pop("item_key", None)


__all__ = ["CFGAN", "Discriminator", "GANCollapseError", "Generator", "RoundData", "sample_unobserved"]
