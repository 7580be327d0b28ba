"""CFGAN: vector-wise GAN collaborative filtering with zero-reconstruction and partial masking.

Reference:
    Dong-Kyu Chae, Jin-Soo Kang, Sang-Wook Kim and Jung-Tae Lee. "CFGAN: A Generic
    Collaborative Filtering Framework based on Generative Adversarial Networks." CIKM 2018.

The model (the paper's final design, ZR + PM, and the authors' released TF code):
    * rows are purchase vectors: items' columns over users (``mode: item``, iCFGAN, the
      default: every setting the authors released is for it) or users' rows over items
      (``mode: user``, the paper's main presentation); c is a row of the training matrix;
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
reg_G 0.001, reg_D 0), in the item-based mode they were released for, with the authors'
initialisation (Xavier-uniform weights, biases uniform in [-0.01, 0.01]).  One Lightning
epoch is one round: the authors' 1000 "epochs" are 1000 / g_steps = 250 rounds, and through
RecBole's entry point a run takes them all (``configs/cfgan.yaml``: ``stopping_step`` equals
the budget) and keeps the round with the best validation score: the authors' model is
still improving near its last rounds, where a patience of a few rounds would stop it early.

Where this implementation departs, and why:
    * **Model selection** is on a validation split (RecBole's), once per round; the authors'
      loop evaluates the *test* set after every G pass and reports a picked epoch.
    * ZR and PM are two independent draws, as the paper describes them.  The authors' code
      reseeds numpy with the wall-clock second before each draw, so a row's ZR and PM draws
      (same pool, same size) coincide in practice; ours are a function of the round's seed and
      the row's id (:func:`sample_unobserved`): reproducible, made one minibatch at a time
      (or for all rows at once where they fit; the same sets), and each pass shuffles the
      rows afresh.
    * **Nothing dense in users x items**: the training rows stay sparse and each minibatch is
      made dense alone; item mode scores a user from every item's last hidden layer (computed
      once per set of weights from the sparse item rows) and the user's output weights, never
      the (items x users) generated matrix.
    * **Real rows are read by their entries** where a layer takes them as input: G's first layer
      reads c, and D's first layer (the paper's linear map of concat(c, x)) reads c and a real x,
      as sums of the weights of their non-zero entries (:mod:`~lightning_genrec.models.layers`).
      The same functions, in a share of the time (rows are 0.5 % dense at ML-20M size); only G's
      output and the masked generated x that D reads are dense.
    * A round trains on the rows that have training interactions; the authors' loop also
      feeds all-zero rows (in item mode, items without training interactions).
    * Training runs the whole round inside one ``training_step`` (manual optimization, the
      two optimizers alternating as in the authors' loop).  Under DDP every process draws the
      same minibatches and takes its share of each; the gradients are summed over processes
      (:meth:`~lightning_genrec.models.gan.RoundGAN.step`): the round of one process with the
      same total batch.
    * **Collapse detection** (not in the authors' code): a non-finite loss, a discriminator
      loss below ``collapse_d_loss`` for ``collapse_patience`` rounds in a row, or a generator
      whose output no longer depends on its condition stops training with
      :class:`GANCollapseError` instead of evaluating a collapsed model.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from lightning_genrec.data import NonZeros, dense
from lightning_genrec.hparams import choice, integer, number, sized_from_data, with_default
from lightning_genrec.models.base import N_ITEMS, TOPK, adam
from lightning_genrec.models.gan import COLLAPSE, D_LEARNING_RATE, G_LEARNING_RATE, GANCollapseError, RoundData, RoundGAN
from lightning_genrec.models.layers import PairInputLinear, SparseInputLinear

MODES = ("user", "item")


def _mlp(d_in: int, hidden: int, layers: int, d_out: int) -> nn.Sequential:
    """Sigmoid hidden layers, linear output; the authors' initialisation: Xavier-uniform weights,
    biases uniform in [-0.01, 0.01] (the GAN is sensitive to it)."""
    mods: list[nn.Module] = []
    for i in range(layers):
        mods += [nn.Linear(d_in if i == 0 else hidden, hidden), nn.Sigmoid()]
    mods.append(nn.Linear(hidden if layers else d_in, d_out))
    for m in mods:
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.uniform_(m.bias, -0.01, 0.01)
    return nn.Sequential(*mods)


class Generator(nn.Module):
    """G(c) -> (B, N) real-valued scores; sigmoid hidden layers, linear output, no noise.

    The condition c (dense rows or :class:`~lightning_genrec.data.NonZeros`) is read by its
    non-zero entries in the first hidden layer (:class:`SparseInputLinear`: the same function)."""

    def __init__(self, n: int, hidden: int = 400, layers: int = 1):
        super().__init__()
        self.net = _mlp(n, hidden, layers, n)
        if layers:                                  # (without a hidden layer the first is the dense output)
            self.net[0] = SparseInputLinear.from_linear(self.net[0])

    def forward(self, c: "torch.Tensor | NonZeros") -> torch.Tensor:
        return self.net(c if isinstance(self.net[0], SparseInputLinear) else dense(c))


class Discriminator(nn.Module):
    """D(x, c) -> (B,) logits that x is the real purchase vector of condition c.

    The first layer is the paper's linear map of concat(c, x), computed half by half
    (:class:`PairInputLinear`), so c and a real x are read by their non-zero entries; a generated
    (masked) x is dense."""

    def __init__(self, n: int, hidden: int = 125, layers: int = 1):
        super().__init__()
        self.net = _mlp(2 * n, hidden, layers, 1)
        self.net[0] = PairInputLinear.from_linear(self.net[0])       # the same initial values

    def forward(self, x: "torch.Tensor | NonZeros", c: "torch.Tensor | NonZeros") -> torch.Tensor:
        return self.net((c, x)).squeeze(1)


_M32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """``x * c mod 2**32`` for int64 ``x`` in [0, 2**32), without int64 overflow (two 16-bit halves of ``c``)."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & _M32


def _fmix32(x: torch.Tensor) -> torch.Tensor:
    """MurmurHash3's 32-bit finaliser: a bijection of [0, 2**32) with full avalanche (int64 tensors)."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x85EBCA6B)
    x = x ^ (x >> 13)
    x = _mul32(x, 0xC2B2AE35)
    return x ^ (x >> 16)


def draw_keys(seed: int, row_ids: torch.Tensor, width: int) -> torch.Tensor:
    """(R, N) int64 random keys in [0, 2**32): a pure function of (``seed``, row id, column).

    A row's keys are distinct (a bijection of the column), so ranking them draws a uniform
    random order of its columns; the same row gets the same keys in every minibatch, on every
    process and device, which is what lets a round's draws be made one minibatch at a time."""
    row = _fmix32(_fmix32(row_ids.long() & _M32) ^ (int(seed) & _M32))               # (R,)
    cols = torch.arange(width, device=row_ids.device, dtype=torch.long)
    return _fmix32(row[:, None] ^ cols[None, :])


def sample_unobserved(rows: torch.Tensor, ratio: float, seed: int, row_ids: torch.Tensor) -> torch.Tensor:
    """(R, N) bool: for each row, floor(ratio * #unobserved) of its zero entries, uniformly
    without replacement (what the authors' per-row ``np.random.choice`` draws).

    ``row_ids`` (R,) name the rows: a row's draw depends only on ``seed`` and its id
    (:func:`draw_keys`), so drawing a round's rows minibatch by minibatch gives the same sets
    as drawing them all at once, and never needs more than one minibatch of keys."""
    observed = rows > 0
    n_pick = torch.floor((~observed).sum(dim=1) * ratio).long()                  # (R,)
    keys = draw_keys(seed, row_ids, rows.shape[1]).masked_fill(observed, 1 << 32)   # observed entries last
    return (keys <= _kth_smallest(keys, n_pick.clamp(min=1))) & (n_pick > 0)[:, None]


def _kth_smallest(keys: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """(R, 1): the ``k[r]``-th smallest of row r of ``keys`` (1-based).  On the CPU a selection per
    row (linear time; where the draws are made minibatch by minibatch, as at ML-20M's item count,
    a sort per row made them about 2/3 of a round, and took five times the selection's time);
    elsewhere one sort of all rows (no per-row launches or host round-trips)."""
    if keys.device.type != "cpu":
        return keys.sort(dim=1).values.gather(1, (k - 1)[:, None])
    out = torch.empty(keys.shape[0], 1, dtype=keys.dtype)
    for r, kr in enumerate(k.tolist()):
        out[r, 0] = keys[r].kthvalue(kr).values
    return out


def _row_entries(indptr: torch.Tensor, indices: torch.Tensor, idx: torch.Tensor):
    """(row of each entry in ``idx``'s order, its column, each row's first entry) of the rows ``idx``
    of a CSR matrix given by ``indptr`` / ``indices``."""
    starts, ends = indptr[idx], indptr[idx + 1]
    lengths = ends - starts
    offsets = torch.cumsum(lengths, 0) - lengths
    total = int(lengths.sum())            # the one host read: the entries' count sizes every tensor below
    row_of = torch.repeat_interleave(torch.arange(len(idx), device=idx.device), lengths, output_size=total)
    first = torch.repeat_interleave(starts - offsets, lengths, output_size=total)
    cols = indices[first + torch.arange(total, device=idx.device)]
    return row_of, cols, offsets


def dense_rows(indptr: torch.Tensor, indices: torch.Tensor, idx: torch.Tensor, width: int) -> torch.Tensor:
    """(B, width) float 0/1 rows ``idx`` of a binary CSR matrix given by ``indptr`` / ``indices``
    (tensors on the model's device): one minibatch dense at a time, never the whole matrix."""
    row_of, cols, _ = _row_entries(indptr, indices, idx)
    out = torch.zeros(len(idx), width, device=idx.device)
    out[row_of, cols] = 1.0
    return out


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
        choice("mode", "item", MODES, "item: iCFGAN, rows are items' vectors over users (the mode of every "
                                      "setting the authors released); user: rows are users' purchase vectors."),
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

    def _training_rows(self) -> "SparseRows":
        """The rows a round trains on (users, or items, with at least one training interaction),
        sparse on the model's device."""
        cached = self._cache.get("rows")
        if cached is None or cached.indptr.device != self.device:
            m = self._orientation()
            cached = SparseRows.of(m, np.flatnonzero(np.diff(m.indptr) > 0), self.device)
            self._cache["rows"] = cached
        return cached

    def _orientation(self) -> sp.csr_matrix:
        """The training matrix, rows = what G conditions on: (U, I) in user mode, (I, U) in item mode."""
        if self._data is None:
            raise RuntimeError("CFGAN needs its training data: use a RecBoleDataModule or call "
                               "model.attach_data(data) first.")
        m = self._data.train
        return m if self.hparams.mode == "user" else m.T.tocsr()

    # -- training: one round per step -------------------------------------------------------
    def configure_optimizers(self):
        """Two Adams.  The authors' L2 term reg * ||theta||^2 / 2 in the loss has the gradient
        reg * theta, which is exactly what torch's (coupled, not AdamW) ``weight_decay`` adds."""
        h = self.hparams
        opt_g = adam(self.generator.parameters(), lr=h.g_learning_rate, weight_decay=h.g_reg_weight)
        opt_d = adam(self.discriminator.parameters(), lr=h.d_learning_rate, weight_decay=h.d_reg_weight)
        return opt_g, opt_d

    def training_step(self, batch, batch_idx):
        """One round (see :mod:`~lightning_genrec.models.gan`): new ZR / PM draws, D's passes, G's passes.

        The round's draws are fixed by two seeds: a row's ZR and PM entries are a function of the seed
        and the row's id (:func:`sample_unobserved`), so they are made one minibatch at a time and are
        the same in every pass of the round and on every process."""
        h = self.hparams
        opt_g, opt_d = self.optimizers()
        rows = self._training_rows()
        g = self.round_generator()
        zr_seed, pm_seed = (int(s) for s in torch.randint(2 ** 32, (2,), generator=g))

        zr_draws, pm_draws = RoundDraws(rows, h.zr_ratio, zr_seed), RoundDraws(rows, h.pm_ratio, pm_seed)

        def minibatch(idx):
            """c (the real rows: by their entries, and dense) and m (observed + partial-masking
            entries) of the rows at ``idx``; G and D read c (and a real x) by its entries."""
            entries = rows.nonzeros(idx)
            c = entries.to_dense()                                              # (B, N) conditions c = real rows
            return entries, c, ((c > 0) | pm_draws(idx, c)).float()

        # discriminator: real rows against G's masked rows, G held fixed
        def d_loss(idx):
            entries, _, mask = minibatch(idx)
            with torch.no_grad():
                fake = self.generator(entries)                                  # (B, N)
            return d_loss_fn(self.discriminator, entries, fake * mask)

        self.toggle_optimizer(opt_d)
        d_losses = self.pass_losses([self.step(opt_d, d_loss, idx)
                                     for idx in self.minibatches(len(rows), h.d_batch_size, h.d_steps, g)],
                                    "discriminator")
        self.untoggle_optimizer(opt_d)

        # generator: fool D on the masked rows, and push the ZR entries to 0; D held fixed
        def g_loss(idx):
            entries, c, mask = minibatch(idx)
            zr = zr_draws(idx, c).float()                                       # (B, N) zero-reconstruction entries
            return g_loss_fn(self.discriminator, entries, self.generator(entries), mask, zr, h.zr_coefficient)

        self.toggle_optimizer(opt_g)
        g_losses = self.pass_losses([self.step(opt_g, g_loss, idx)
                                     for idx in self.minibatches(len(rows), h.g_batch_size, h.g_steps, g)],
                                    "generator")
        self.untoggle_optimizer(opt_g)

        self._cache.pop("item_key", None)                                       # G changed: item scores are stale
        d_mean, _ = self.log_round(d_losses, g_losses)
        with torch.no_grad():
            sample = torch.arange(min(len(rows), 256), device=self.device)
            self._detect_collapse(d_mean, self.generator(rows.nonzeros(sample)),
                                  "Try a smaller d_learning_rate, fewer d_steps, or a larger d_reg_weight")

    # -- scoring -----------------------------------------------------------------------------
    def score(self, batch):
        if self.hparams.mode == "user":
            return self.generator(batch["input"])                               # (B, I): dense or NonZeros rows
        # item mode: a user's score for item j is the user's entry of G(c_j), G's output layer is linear,
        # so it is features_j . W_out[user] + b_out[user], with every item's last hidden features computed
        # once per set of weights (I x hidden, from the sparse item rows) -- never the (I, U) output
        features = self._item_features()
        out = self.generator.net[-1]
        users = batch["user"].to(self.device)
        weight = out.weight[users]                                              # (B, hidden)
        scores = torch.sparse.mm(features, weight.t()) if features.is_sparse else features @ weight.t()
        return (scores + out.bias[users]).t()                                   # (B, I)

    @torch.no_grad()
    def _item_features(self) -> torch.Tensor:
        """(I, hidden) the generator's last hidden layer for every item id's row (sparse rows
        themselves when G has no hidden layer), cached until G's weights change."""
        key = tuple((p.data_ptr(), p._version) for p in self.generator.parameters())
        if self._cache.get("item_key") != key or self._cache.get("item_features") is None:
            rows = self._cache.get("item_rows")                                 # the sparse (I, U) item rows, once
            if rows is None or rows.device != self.device:
                coo = self._orientation().tocoo()
                rows = torch.sparse_coo_tensor(torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64)),
                                               torch.ones(coo.nnz), size=coo.shape, check_invariants=False
                                               ).coalesce().to(self.device)
                self._cache["item_rows"] = rows
            layers = list(self.generator.net)[:-1]
            if not layers:
                features = rows
            else:
                first = layers[0]
                features = torch.sparse.mm(rows, first.weight) + first.bias      # (I, hidden): sparse input, once
                for layer in layers[1:]:
                    features = layer(features)
            self._cache["item_features"] = features
            self._cache["item_key"] = key
        return self._cache["item_features"]

    def on_validation_epoch_start(self) -> None:
        self._cache.pop("item_key", None)   # weights may have been replaced without a version bump

    def on_test_epoch_start(self) -> None:
        self._cache.pop("item_key", None)


class RoundDraws:
    """One round's draw of ``ratio`` of each training row's unobserved entries (:func:`sample_unobserved`
    with the round's ``seed``): made for all rows at once when they fit in ``cache_cells`` (one sort per
    row a round), otherwise minibatch by minibatch (bounded memory at any size).  The sets are the same
    either way: a row's draw depends only on the seed and its id."""

    def __init__(self, rows: "SparseRows", ratio: float, seed: int, cache_cells: int = 2 ** 26):
        self.rows, self.ratio, self.seed = rows, ratio, seed
        self.all: torch.Tensor | None = None
        if len(rows) * rows.width <= cache_cells:
            chunk = max(1, 2 ** 22 // max(rows.width, 1))
            parts = [sample_unobserved(rows.dense(i), ratio, seed, rows.ids[i])
                     for i in torch.arange(len(rows), device=rows.ids.device).split(chunk)]
            self.all = torch.cat(parts) if parts else torch.zeros(0, rows.width, dtype=torch.bool)

    def __call__(self, idx: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """(B, N) bool draws of the rows at positions ``idx`` (``dense``: those rows)."""
        if self.all is not None:
            return self.all[idx]
        return sample_unobserved(dense, self.ratio, self.seed, self.rows.ids[idx])


class SparseRows:
    """Some rows of a binary CSR matrix on a device; minibatches are made dense one at a time."""

    def __init__(self, indptr: torch.Tensor, indices: torch.Tensor, ids: torch.Tensor, width: int):
        self.indptr, self.indices, self.ids, self.width = indptr, indices, ids, width

    @classmethod
    def of(cls, matrix: sp.csr_matrix, ids: np.ndarray, device) -> "SparseRows":
        sub = matrix[ids]
        return cls(torch.from_numpy(sub.indptr.astype(np.int64)).to(device),
                   torch.from_numpy(sub.indices.astype(np.int64)).to(device),
                   torch.from_numpy(np.asarray(ids, dtype=np.int64)).to(device), matrix.shape[1])

    def __len__(self) -> int:
        return len(self.ids)

    def dense(self, idx: torch.Tensor) -> torch.Tensor:
        """(B, width) float rows at positions ``idx``."""
        return dense_rows(self.indptr, self.indices, idx, self.width)

    def nonzeros(self, idx: torch.Tensor) -> NonZeros:
        """The rows at positions ``idx`` by their entries (value 1): what :meth:`dense` holds."""
        row_of, cols, offsets = _row_entries(self.indptr, self.indices, idx)
        return NonZeros(row_of, cols, torch.ones(cols.shape[0], device=cols.device), offsets, self.width)


__all__ = ["CFGAN", "Discriminator", "GANCollapseError", "Generator", "RoundData", "RoundDraws", "SparseRows", "dense_rows",
           "draw_keys", "sample_unobserved"]
