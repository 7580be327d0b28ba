"""LARA: adversarial attribute-to-user generation for new-item recommendation.

Reference:
    Changfeng Sun, Han Liu, Meng Liu, Zhaochun Ren, Tian Gan and Liqiang Nie. "LARA:
    Attribute-to-feature Adversarial Learning for New-item Recommendation." WSDM 2020.

The model (the paper, and the authors' released TF code):
    * **attributes.** Each binary item attribute k (ml-100k: each genre; in general each
      token of the configured ``attribute_fields``, token / token_seq item fields) has
      two embeddings, one for "present" (id 2k + 1) and one for "absent" (id 2k): an item
      is the A attribute embeddings of size ``attribute_dim`` (the absent ones included);
    * **generator.** Its own attribute embedding table; the A embeddings (the per-attribute
      partial profiles) are concatenated and combined by tanh ``hidden_size`` -> tanh
      ``hidden_size`` -> tanh A: the item's generated user, a vector in attribute space;
    * **real users** are fixed vectors, not learned: a user is the attribute counts of the
      items in their training history, normalised to sum 1 (ml-100k: the user's genre
      shares).  This is what the authors' release feeds the discriminator;
    * **discriminator.** A separate attribute embedding table; concat(item attributes,
      user) -> tanh ``hidden_size`` -> tanh ``hidden_size`` -> A logits (a vector output,
      each entry with its own BCE, averaged);
    * **losses.** For a training pair (item i with attributes a, user u who interacted
      with it) and a user u' who did not interact with i:
      D minimises BCE(D(a, u), 1) + BCE(D(a, G(a)), 0) + BCE(D(a, u'), 0) (G held fixed);
      G minimises BCE(D(a, G(a)), 1) (D held fixed).  Two Adam optimizers (1e-4);
    * **a round** (one Lightning epoch, the authors' "iteration") is ``d_steps`` full passes
      of D over the training pairs in minibatches of ``batch_size`` (1024), then ``g_steps``
      passes of G (1 and 1, as released);
    * **recommendation (item -> users).** For an item, users are ranked by the inner product
      of its generated user G(a) with each user's *raw* attribute counts (as the authors'
      evaluation does).  The same similarity, transposed, scores items for a user, so the
      model also runs through RecBole's user -> item full-ranking evaluator;
      ``item_precision@K``, ``item_ndcg@K`` and ``item_map@K`` (the paper's P, NDCG and MAP
      in the item -> users direction, :mod:`lightning_genrec.item_ranking`) are computed
      beside RecBole's metrics at every evaluation, and ``item_ndcg@20`` selects the round.

Where this implementation departs, and why:
    * **Model selection** is on a validation split (RecBole's; under the cold-start item
      protocol its own held-out items); the authors report each metric's best round on test.
    * **Negatives.** The authors pair each training pair with a row of a pre-built list of
      non-interacting (user, item) pairs, with that item's attributes; here u' is drawn
      afresh each round, uniformly among the users of the training pairs (users with a
      training item that has attributes) who have not interacted with the pair's own item -- the item's attributes are then scored
      with a real interacting and a real non-interacting user, as the paper's loss reads.
    * The last, partial minibatch of a pass is trained on (the authors' loop repeats the
      previous full one); Xavier-uniform weights with zero biases (the authors draw the
      biases with Xavier too); the authors' L2 weight ``alpha`` is 0 in their release and
      not exposed.
    * **Items without attributes** (none of the vocabulary's tokens; the vocabulary is
      fitted on the training items) are not trained on, and their interactions do not
      count in the user vectors; how many were skipped is logged.  Such an item, when new,
      is scored from its all-"absent" code.
    * Metrics use RecBole's normalisations (see :mod:`lightning_genrec.item_ranking`).
    * A round runs in one ``training_step``; under DDP each process takes its share of every
      minibatch and the gradients are summed (as for CFGAN).
    * **Collapse detection** (not in the authors' code) as for CFGAN:
      :class:`~lightning_genrec.models.gan.GANCollapseError`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from lightning_genrec.content import ItemContent, MissingContentError, item_content
from lightning_genrec.data import dense
from lightning_genrec.hparams import integer, names, setting, sized_from_data
from lightning_genrec.models.base import N_ITEMS, TOPK, adam
from lightning_genrec.models.gan import COLLAPSE, D_LEARNING_RATE, G_LEARNING_RATE, RoundData, RoundGAN

log = logging.getLogger(__name__)

DEFAULT_ATTRIBUTE_FIELDS = ("class",)


def attribute_fields_tuple(value) -> tuple[str, ...]:
    """An ``attribute_fields`` setting as a tuple (``None``: ml-100k's genres, ``class``)."""
    if value is None:
        return DEFAULT_ATTRIBUTE_FIELDS
    return (value,) if isinstance(value, str) else tuple(value)


@dataclass
class AttributeData(RoundData):
    """:class:`~lightning_genrec.models.gan.RoundData` plus binary item attributes (I, A)
    from the ``attribute_fields`` token / token_seq item fields (a token is an attribute if a
    training item carries it).  Evaluation rows are the users' rows, as for MVAE."""

    SETTINGS = RoundData.SETTINGS + (
        setting(names("attribute_fields", DEFAULT_ATTRIBUTE_FIELDS, ".item token / token_seq fields whose tokens "
                                                                    "are the binary attributes.")),
    )

    attributes: ItemContent | None = None
    skipped_items: int = 0          # training items without any attribute (not trained on)

    @classmethod
    def from_train_dataset(cls, dataset, test_input: str = "train", attribute_fields=DEFAULT_ATTRIBUTE_FIELDS,
                           model: str = "LARA") -> "AttributeData":
        """``attribute_fields``: see :attr:`SETTINGS`; ``model`` names the model in messages."""
        data = super().from_train_dataset(dataset, test_input)
        fields = attribute_fields_tuple(attribute_fields)
        wrong = [f"{f} ({dataset.field2type[f].value})" for f in fields
                 if f in dataset.field2type and dataset.field2type[f].value not in ("token", "token_seq")]
        if wrong:
            raise MissingContentError(f"{model}: attribute_fields must be token or token_seq item fields; "
                                      f"{', '.join(wrong)} cannot be binary attributes.")
        trained = data.train_items()
        data.attributes = item_content(dataset, fields, trained, 1, model=model)
        no_attr = trained[~data.has_attributes()[trained]]
        data.skipped_items = len(no_attr)
        if len(no_attr):
            n_inter = int(data.item_counts[no_attr].sum())
            log.warning(f"{model}: {len(no_attr)} training item(s) have none of the attributes "
                        f"({', '.join(fields)}); they and their {n_inter} interaction(s) are skipped in training.")
        return data

    @property
    def n_attributes(self) -> int:
        return self.attributes.dim

    def has_attributes(self) -> np.ndarray:
        """(I,) bool: the item carries at least one attribute."""
        return self.attributes.matrix.sum(axis=1) > 0

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(users, items) of the training interactions whose item has attributes."""
        coo = self.train.tocoo()
        keep = self.has_attributes()[coo.col]
        return coo.row[keep].astype(np.int64), coo.col[keep].astype(np.int64)

    def profile_counts(self, phase: str | None = None) -> np.ndarray:
        """(U, A) float32: each user's attribute counts over the items they are scored from in
        ``phase`` (training items; for ``test`` with ``test_input: train_valid`` also validation items)."""
        R = self.train
        if phase == "test" and self.test_input == "train_valid":
            R = ((R + self.split("valid").positives) > 0).astype(np.float32)
        R = sp.csr_matrix(R)
        return np.asarray(R @ self.attributes.matrix, dtype=np.float32)


def _xavier(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.xavier_uniform_(m.weight)
        if isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)


def attribute_codes(attributes: torch.Tensor) -> torch.Tensor:
    """(B, A) binary attributes -> (B, A) embedding ids 2k + v (v = 1 present, 0 absent)."""
    A = attributes.shape[1]
    return 2 * torch.arange(A, device=attributes.device) + (attributes > 0).long()


def embed_attributes(table: nn.Embedding, codes: torch.Tensor) -> torch.Tensor:
    """``table(codes).flatten(1)``: (B, A) ids 2k + v -> (B, A * dim), computed as a choice
    between row 2k (absent) and row 2k + 1 (present) of each attribute -- the same values,
    whose backward is a plain reduction instead of an index scatter (faster on CPU)."""
    A = codes.shape[1]
    w = table.weight.view(A, 2, -1)                                           # [k, v] = row 2k + v
    present = (codes % 2).bool().unsqueeze(-1)                                # (B, A, 1)
    return torch.where(present, w[:, 1], w[:, 0]).flatten(1)


class Generator(nn.Module):
    """G(a): attribute embeddings (own table) -> tanh hidden -> tanh hidden -> tanh (A,) user."""

    def __init__(self, n_attributes: int, attribute_dim: int = 5, hidden: int = 100):
        super().__init__()
        self.embedding = nn.Embedding(2 * n_attributes, attribute_dim)
        self.net = nn.Sequential(nn.Linear(n_attributes * attribute_dim, hidden), nn.Tanh(),
                                 nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, n_attributes), nn.Tanh())
        _xavier(self)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.net(embed_attributes(self.embedding, codes))


class Discriminator(nn.Module):
    """D(a, u): [attribute embeddings (own table), user] -> tanh hidden -> tanh hidden -> (A,) logits."""

    def __init__(self, n_attributes: int, attribute_dim: int = 5, hidden: int = 100):
        super().__init__()
        self.embedding = nn.Embedding(2 * n_attributes, attribute_dim)
        self.net = nn.Sequential(nn.Linear(n_attributes * attribute_dim + n_attributes, hidden), nn.Tanh(),
                                 nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, n_attributes))
        _xavier(self)

    def forward(self, codes: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([embed_attributes(self.embedding, codes), users], dim=1))


def _bce(logits: torch.Tensor, target: float, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Mean sigmoid cross-entropy of every entry against ``target`` (over ``rows`` only, if given)."""
    if rows is not None and not bool(rows.all()):
        logits = logits[rows]
        if logits.numel() == 0:
            return logits.sum()
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def d_loss_fn(D: Discriminator, codes, real_users, fake_users, neg_users, neg_ok=None) -> torch.Tensor:
    """BCE(D(a, u), 1) + BCE(D(a, G(a)), 0) + BCE(D(a, u'), 0), each the mean over rows and entries
    (``neg_ok``: rows that have a non-interacting user u')."""
    return (_bce(D(codes, real_users), 1.0) + _bce(D(codes, fake_users), 0.0)
            + _bce(D(codes, neg_users), 0.0, neg_ok))


def g_loss_fn(D: Discriminator, codes, fake_users) -> torch.Tensor:
    """BCE(D(a, G(a)), 1)."""
    return _bce(D(codes, fake_users), 1.0)


def sample_non_interacting(items: torch.Tensor, candidates: torch.Tensor, observed_keys: torch.Tensor,
                           n_items: int, generator: torch.Generator, tries: int = 50):
    """For each of ``items``, a user drawn uniformly from ``candidates`` whose (user, item) key
    ``user * n_items + item`` is not in the sorted ``observed_keys``; ``(users, ok)`` where ``ok``
    is False for items no candidate left un-interacted after ``tries`` redraws."""
    users = torch.empty_like(items)
    todo = torch.arange(len(items), device=items.device)
    for _ in range(tries):
        pick = candidates[torch.randint(len(candidates), (len(todo),), generator=generator).to(items.device)]
        users[todo] = pick
        keys = pick * n_items + items[todo]
        pos = torch.searchsorted(observed_keys, keys).clamp(max=len(observed_keys) - 1)
        todo = todo[observed_keys[pos] == keys]
        if len(todo) == 0:
            break
    ok = torch.ones(len(items), dtype=torch.bool, device=items.device)
    ok[todo] = False
    return users, ok


class LARA(RoundGAN):
    """LARA (Sun et al., WSDM 2020) as a LightningModule with manual optimization."""

    data_class = AttributeData
    item_metrics = True

    HYPERPARAMETERS = (
        N_ITEMS,
        sized_from_data("n_attributes", "number of binary item attributes A."),
        integer("attribute_dim", 5, "size of each attribute-value embedding (present / absent each have one)."),
        integer("hidden_size", 100, "units of each of the two tanh hidden layers of G and of D."),
        G_LEARNING_RATE,
        D_LEARNING_RATE,
        integer("batch_size", 1024, "training (user, item) pairs per minibatch."),
        integer("d_steps", 1, "discriminator passes over the training pairs per round (they come first)."),
        integer("g_steps", 1, "generator passes over the training pairs per round."),
        *COLLAPSE,
        TOPK,
    )

    def __init__(self, **hparams):
        super().__init__(**hparams)
        self.automatic_optimization = False
        self.generator: Generator | None = None
        self.discriminator: Discriminator | None = None
        self._cache: dict = {}
        if self.hparams.n_items is not None and self.hparams.n_attributes is not None:
            self.build()

    def build(self) -> None:
        h = self.hparams
        if h.n_attributes is None:
            raise RuntimeError("LARA does not know the number of item attributes: pass n_attributes=... or train "
                               "with a RecBoleDataModule(model='LARA').")
        self.generator = Generator(h.n_attributes, h.attribute_dim, h.hidden_size)
        self.discriminator = Discriminator(h.n_attributes, h.attribute_dim, h.hidden_size)
        self.register_d_wins()

    def attach_data(self, data) -> None:
        if not isinstance(data, AttributeData):
            raise ValueError("LARA needs item attributes: build its data with RecBoleDataModule(model='LARA') "
                             "(AttributeData), not the interaction-only data of another model.")
        h = self.hparams
        if h.n_attributes is None:
            h.n_attributes = data.n_attributes
            if h.n_items is not None:
                self.build()
        elif h.n_attributes != data.n_attributes:
            raise ValueError(f"LARA was built for {h.n_attributes} attributes but the data has "
                             f"{data.n_attributes}; use the same attribute_fields, or n_attributes=None.")
        super().attach_data(data)
        self._cache = {}

    # -- data on the model's device ------------------------------------------------------------
    def _arrays(self) -> dict[str, torch.Tensor]:
        d = self._cache.get("data")
        if d is None or d["codes"].device != self.device:
            t = self._data
            if t is None:
                raise RuntimeError("LARA needs its training data: use a RecBoleDataModule or call "
                                   "model.attach_data(data) first.")
            attrs = torch.from_numpy(t.attributes.matrix)
            counts = torch.from_numpy(t.profile_counts())
            users, items = t.pairs()
            coo = t.train.tocoo()
            keys = np.sort(coo.row.astype(np.int64) * t.n_items + coo.col.astype(np.int64))
            d = {"attrs": attrs, "codes": attribute_codes(attrs),
                 "profiles": counts / counts.sum(dim=1, keepdim=True).clamp(min=1.0),   # shares, sum 1
                 "users": torch.from_numpy(users), "items": torch.from_numpy(items),
                 "keys": torch.from_numpy(keys), "candidates": torch.from_numpy(np.unique(users)),
                 # distinct attribute codes of the training items: the conditions the collapse check compares
                 "conditions": torch.unique(attribute_codes(attrs[np.unique(items)]), dim=0)[:256]}
            d = {k: v.to(self.device) for k, v in d.items()}
            self._cache["data"] = d
        return d

    # -- training: one round per step ---------------------------------------------------------------
    def configure_optimizers(self):
        h = self.hparams
        opt_g = adam(self.generator.parameters(), lr=h.g_learning_rate)
        opt_d = adam(self.discriminator.parameters(), lr=h.d_learning_rate)
        return opt_g, opt_d

    def training_step(self, batch, batch_idx):
        """One round (see :mod:`~lightning_genrec.models.gan`): fresh non-interacting users, D's passes,
        G's passes, over the training (user, item) pairs."""
        h = self.hparams
        opt_g, opt_d = self.optimizers()
        d = self._arrays()
        users, items, codes, profiles = d["users"], d["items"], d["codes"], d["profiles"]
        if len(items) == 0:
            raise RuntimeError("LARA has no training pair: no item with training interactions carries any of the "
                               "attributes. Check attribute_fields.")
        g = self.round_generator()
        neg, neg_ok = sample_non_interacting(items, d["candidates"], d["keys"], self._data.n_items, g)

        # discriminator: (item, its user) real; (item, G's user) and (item, a non-interacting user) fake
        def d_loss(idx):
            a = codes[items[idx]]                                               # (B, A) attribute codes
            with torch.no_grad():
                fake = self.generator(a)                                        # (B, A) G held fixed
            return d_loss_fn(self.discriminator, a, profiles[users[idx]], fake, profiles[neg[idx]], neg_ok[idx])

        self.toggle_optimizer(opt_d)
        d_losses = self.pass_losses([self.step(opt_d, d_loss, idx)
                                     for idx in self.minibatches(len(items), h.batch_size, h.d_steps, g)],
                                    "discriminator")
        self.untoggle_optimizer(opt_d)

        # generator: make D call (item, G's user) real; D held fixed
        def g_loss(idx):
            a = codes[items[idx]]
            return g_loss_fn(self.discriminator, a, self.generator(a))

        self.toggle_optimizer(opt_g)
        g_losses = self.pass_losses([self.step(opt_g, g_loss, idx)
                                     for idx in self.minibatches(len(items), h.batch_size, h.g_steps, g)],
                                    "generator")
        self.untoggle_optimizer(opt_g)

        d_mean, _ = self.log_round(d_losses, g_losses)
        with torch.no_grad():
            self._detect_collapse(d_mean, self.generator(d["conditions"]),
                                  "Try a smaller d_learning_rate or fewer d_steps")

    # -- scoring ---------------------------------------------------------------------------------------
    def generated_users(self, items: torch.Tensor | np.ndarray | None = None) -> torch.Tensor:
        """(C, A) generated users G(a) of ``items`` (default: every item id)."""
        codes = self._arrays()["codes"]
        if items is not None:
            codes = codes[torch.as_tensor(items, dtype=torch.long, device=codes.device)]
        return self.generator(codes)

    @torch.no_grad()
    def generated_users_for(self, attributes: torch.Tensor) -> torch.Tensor:
        """(B, D) generated users G(a) of items described only by binary ``attributes`` (B, A), in the
        columns of the training data's attributes: new items, never trained on."""
        return self.generator(attribute_codes(attributes.to(self.device)))

    def score(self, batch):
        """User -> item: each user's raw attribute counts (from the batch's input rows) times every
        item's generated user."""
        counts = dense(batch["input"]).float() @ self._arrays()["attrs"]          # (B, A)
        return counts @ self.generated_users().T                               # (B, I)

    def item_user_scores(self, items: np.ndarray, phase: str) -> torch.Tensor:
        """Item -> users: G(a) of each item times every user's raw attribute counts, (C, U).  The
        item -> users metrics call it on chunks of items (:mod:`lightning_genrec.item_ranking`)."""
        return self.generated_users(items) @ self._profile_counts(phase).T

    def _profile_counts(self, phase: str) -> torch.Tensor:
        """(U, A) raw attribute counts of the users as scored in ``phase`` (cheap to keep: A is small),
        computed once for all the chunks of an evaluation; again when the data or their validation
        split (which ``test_input: train_valid`` reads) is replaced."""
        valid = self._data.valid
        cached = self._cache.get("counts")
        if cached is None or cached[0] != phase or cached[1] is not valid or cached[2].device != self.device:
            cached = (phase, valid, torch.from_numpy(self._data.profile_counts(phase)).to(self.device))
            self._cache["counts"] = cached
        return cached[2]


__all__ = ["LARA", "AttributeData", "Discriminator", "Generator", "attribute_codes", "attribute_fields_tuple",
           "d_loss_fn", "embed_attributes", "g_loss_fn", "sample_non_interacting"]
