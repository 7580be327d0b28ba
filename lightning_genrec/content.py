"""Item content from RecBole item features: one row ``x_j`` in ``[0, 1]^D`` per item.

Which ``.item`` fields make up the content is configuration (``content_fields``):

* ``token`` fields (ml-100k ``release_year``): one-hot over the field's tokens;
* ``token_seq`` fields (ml-100k ``class`` genres, ``movie_title`` words):
  multi-hot over the field's tokens;
* ``float`` fields: min-max scaled to ``[0, 1]`` (the range of the training
  items; values outside it are clipped);
* ``float_seq`` fields: each position scaled the same way.

Which items a content model learns from (``content_items``) decides what the
vocabulary and the scaling are fitted on:

* ``all``: every item of the data set.  The item content is side information
  known for the whole catalogue at training time, and an item without training
  interactions is an item nobody has chosen yet -- the CVAE paper's setting
  (its P = 1 split leaves three quarters of the articles without a training
  rating, and the authors' content VAE trains on all of them).
* ``train``: only the items with at least one training interaction; the others
  are new items, unseen until they are scored.  The cold-start item protocol
  needs this (its held-out items must not be learned from).
* ``auto`` (default): ``train`` under the cold-start item protocol (a
  training dataset that carries its ``cold_items``), ``all`` otherwise.

A token joins the vocabulary if at least ``content_min_count`` of those items
carry it; other tokens are dropped, since no model fitted on those items could
have learned them.  Row 0 (RecBole's padding item) is all zeros.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from lightning_genrec.data import InteractionData
from lightning_genrec.errors import MissingContentError
from lightning_genrec.hparams import choice, integer, names, setting

DEFAULT_CONTENT_FIELDS = ("class", "movie_title", "release_year")
CONTENT_ITEMS = ("auto", "all", "train")


@dataclass
class ItemContent:
    """``matrix`` (I, D) float32 in [0, 1]; ``columns`` names each of the D columns (``field=token``)."""

    matrix: np.ndarray
    columns: list[str] = field(default_factory=list)
    fields: tuple[str, ...] = ()

    @property
    def dim(self) -> int:
        return self.matrix.shape[1]


def content_fields_tuple(value) -> tuple[str, ...]:
    """A ``content_fields`` setting as a tuple (``None``: ml-100k's genres, title words and release year)."""
    if value is None:
        return DEFAULT_CONTENT_FIELDS
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def missing_content_message(model: str, dataset: str, wanted, available, what: str = "content_fields") -> str:
    wanted = list(wanted)
    if available is None:
        where = f"dataset {dataset!r} has no {dataset}.item file"
    else:
        missing = [f for f in wanted if f not in available]
        where = (f"{dataset}.item has no field{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                 f"(its fields: {', '.join(available)})")
    return (f"{model} needs item {'content' if what == 'content_fields' else 'attributes'} and looked for the item "
            f"fields {', '.join(wanted)}, but {where}. Set {what} to "
            f"{'token / token_seq / float' if what == 'content_fields' else 'token / token_seq'} fields of the .item "
            "file, or use a dataset "
            "with item features.")


def item_content(dataset, fields, fit_items: np.ndarray | None = None, min_count: int = 1,
                 model: str = "the model") -> ItemContent:
    """Encode ``fields`` of RecBole ``dataset.item_feat`` as :class:`ItemContent`.

    ``fit_items``: item ids the vocabulary and scaling are fitted on (default: all items); a float value
    RecBole filled in (``dataset.filled_item_floats``, recorded by :mod:`recbole_ext.cold_start`) is refilled
    with the mean over those items.
    Raises :class:`MissingContentError` naming the fields when the dataset lacks them."""
    fields = content_fields_tuple(fields)
    feat = dataset.item_feat
    available = [] if feat is None else [f for f in feat.columns if f != dataset.iid_field]
    if feat is None or any(f not in available for f in fields):
        raise MissingContentError(missing_content_message(model, dataset.dataset_name, fields,
                                                          available if feat is not None else None))
    n_items = dataset.item_num
    fit_rows = np.arange(1, n_items) if fit_items is None else np.asarray(fit_items, dtype=np.int64)
    # Two passes, so that the only (I, D) array ever built is the result: first each field's
    # columns (token fields: the kept tokens, counted from the token ids -- a field's full
    # (I, vocabulary) one-hot would be 3 GB for CiteULike-a's 46k tags), then one fill.
    parts, columns = [], []
    for name in fields:
        kind = dataset.field2type[name]          # a recbole.utils.FeatureType; its value names the type
        values = feat[name].numpy()
        if kind.value in ("token", "token_seq"):
            tokens = values.reshape(n_items, -1).astype(np.int64)         # (I, L) token ids, 0 = padding
            n_tokens = dataset.num(name)
            fit = tokens[fit_rows]
            # (row, token) pairs counted once: a multi-hot row carries a repeated token once
            pairs = np.unique(np.repeat(np.arange(len(fit_rows), dtype=np.int64), fit.shape[1]) * n_tokens
                              + fit.reshape(-1))
            df = np.bincount(pairs % n_tokens, minlength=n_tokens)
            df[0] = 0                                                     # padding token
            keep = np.flatnonzero(df >= max(1, min_count))
            column_of = np.full(n_tokens, -1, dtype=np.int64)
            column_of[keep] = np.arange(len(keep))
            parts.append(("tokens", tokens, column_of, len(keep)))
            id2token = dataset.field2id_token[name]
            columns += [f"{name}={id2token[t]}" for t in keep]
        elif kind.value in ("float", "float_seq"):
            x = values.reshape(n_items, -1).astype(np.float32)
            filled = getattr(dataset, "filled_item_floats", {}).get(name)
            if filled is not None and len(filled):
                # RecBole filled these items' missing values with the mean over every item; refill them with the
                # mean over the fitted items that have a value, so items outside the fit do not shape the content
                had = np.setdiff1d(fit_rows, filled)
                x[filled] = x[had].mean(axis=0) if len(had) else 0.0
            lo, hi = x[fit_rows].min(axis=0), x[fit_rows].max(axis=0)
            scaled = np.clip((x - lo) / np.where(hi > lo, hi - lo, 1.0), 0.0, 1.0)
            parts.append(("floats", scaled.astype(np.float32), None, x.shape[1]))
            columns += [name] if x.shape[1] == 1 else [f"{name}[{i}]" for i in range(x.shape[1])]
        else:
            raise MissingContentError(f"{model}: item field {name!r} has type {kind.value}; content fields must be "
                                      "token, token_seq, float or float_seq.")
    matrix = np.zeros((n_items, sum(width for *_, width in parts)), dtype=np.float32)
    start = 0
    for what, values, column_of, width in parts:
        if what == "tokens":
            rows = np.repeat(np.arange(n_items), values.shape[1])
            cols = column_of[values.reshape(-1)]
            on = cols >= 0
            matrix[rows[on], start + cols[on]] = 1.0
        else:
            matrix[:, start:start + width] = values
        start += width
    matrix[0] = 0.0
    if matrix.shape[1] == 0:
        fix = (f"lower content_min_count (now {min_count})" if min_count > 1 else
               "choose item fields whose values those items carry")
        raise MissingContentError(f"{model}: the item fields {', '.join(fields) or '(none)'} give no column that "
                                  f"at least {min_count} of the {len(fit_rows)} items it is fitted on share; {fix}.")
    return ItemContent(np.ascontiguousarray(matrix), columns, fields)


@dataclass
class ContentData(InteractionData):
    """:class:`~lightning_genrec.data.InteractionData` plus item content, for models that
    train on items (CVAE): one training example per item it learns from
    (:meth:`learned_items`), a batch is ``{"item": (B,), "content": (B, D)}``.  Evaluation rows
    are the users' rows, as for MVAE.

    Config keys: ``content_fields`` (item fields, default ``[class, movie_title, release_year]``),
    ``content_min_count`` (a token needs this many of those items, default 2) and
    ``content_items`` (``all`` / ``train`` / ``auto``: see the module's docstring)."""

    SETTINGS = InteractionData.SETTINGS + (
        setting(names("content_fields", DEFAULT_CONTENT_FIELDS, "item fields that make up the content: token / "
                      "token_seq (one- / multi-hot) or float / float_seq (min-max scaled).")),
        setting(integer("content_min_count", 2, "a token joins the vocabulary if this many of the learned-from "
                        "items carry it.")),
        setting(choice("content_items", "auto", CONTENT_ITEMS,
                       "which items' content the model learns from: all (every item of the data set, the CVAE "
                       "paper's), train (items with training interactions; the rest are new items), auto (train "
                       "under cold_item_split, else all).")),
    )

    content: ItemContent | None = None
    content_items: str = "all"            # resolved: all / train

    @classmethod
    def from_train_dataset(cls, dataset, test_input: str = "train", content_fields=DEFAULT_CONTENT_FIELDS,
                           content_min_count: int = 2, content_items: str = "auto",
                           model: str = "the model") -> "ContentData":
        """``content_fields``, ``content_min_count``, ``content_items``: see :attr:`SETTINGS`; ``model``
        names the model in error messages.  A training dataset of the cold-start item protocol
        (one that carries ``cold_items``) resolves ``auto`` to ``train`` and refuses ``all``."""
        if content_items not in CONTENT_ITEMS:
            raise ValueError(f"content_items={content_items!r}; choose one of {', '.join(CONTENT_ITEMS)}.")
        cold = getattr(dataset, "cold_items", None) is not None
        if cold and content_items == "all":
            raise ValueError(f"{model}: content_items='all' would learn from the held-out items of this cold-start "
                             "split, which must stay unseen until they are scored; use content_items='train' "
                             "(or 'auto').")
        data = super().from_train_dataset(dataset, test_input)
        data.content_items = content_items if content_items != "auto" else ("train" if cold else "all")
        data.content = item_content(dataset, content_fields, data.learned_items(), int(content_min_count),
                                      model=model)
        return data

    def learned_items(self) -> np.ndarray:
        """The items whose content the model learns from and fits the vocabulary on: every item
        (``all``; not RecBole's padding item 0) or those with training interactions (``train``)."""
        if self.content_items == "all":
            return np.arange(1, self.n_items)
        return self.train_items()

    def train_examples(self) -> np.ndarray:
        return self.learned_items()

    def train_batch(self, examples) -> dict[str, torch.Tensor]:
        items = np.asarray(examples, dtype=np.int64)
        return {"item": torch.from_numpy(items), "content": torch.from_numpy(self.content.matrix[items])}
