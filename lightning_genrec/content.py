"""Item content from RecBole item features: one row ``x_j`` in ``[0, 1]^D`` per item.

Which ``.item`` fields make up the content is configuration (``content_fields``):

* ``token`` fields (ml-100k ``release_year``): one-hot over the field's tokens;
* ``token_seq`` fields (ml-100k ``class`` genres, ``movie_title`` words):
  multi-hot over the field's tokens;
* ``float`` fields: min-max scaled to ``[0, 1]`` (the range of the training
  items; values outside it are clipped);
* ``float_seq`` fields: each position scaled the same way.

The vocabulary is fitted on the *training items* (items with at least one
training interaction): a token joins it if at least ``content_min_count`` of
them carry it.  A cold item's tokens that no training item has are dropped,
since no model fitted on the training items could have learned them.  Row 0
(RecBole's padding item) is all zeros.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch

from lightning_genrec.data import InteractionTables

DEFAULT_CONTENT_FIELDS = ("class", "movie_title", "release_year")


class MissingContentError(ValueError):
    """The dataset lacks the item fields a content model needs."""


@dataclass
class ItemContent:
    """``matrix`` (I, D) float32 in [0, 1]; ``columns`` names each of the D columns (``field=token``)."""

    matrix: np.ndarray
    columns: list[str] = field(default_factory=list)
    fields: tuple[str, ...] = ()

    @property
    def dim(self) -> int:
        return self.matrix.shape[1]


def _fields_of(value) -> tuple[str, ...]:
    if value is None:
        return DEFAULT_CONTENT_FIELDS
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def content_fields_of(config) -> tuple[str, ...]:
    """The config's ``content_fields`` (default: ml-100k's genres, title words and release year)."""
    return _fields_of(config["content_fields"] if config is not None and "content_fields" in config else None)


def item_file_header(config) -> dict[str, str] | None:
    """``{field: type}`` of the dataset's ``.item`` file header, or ``None`` if there is no such file."""
    path = os.path.join(config["data_path"], f"{config['dataset']}.item")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split(config["field_separator"] or "\t")
    return dict((c.split(":") + [""])[:2] for c in header)


def item_file_fields(config) -> list[str] | None:
    """Field names in the dataset's ``.item`` file header, or ``None`` if there is no such file."""
    header = item_file_header(config)
    return None if header is None else list(header)


def require_item_fields(config, fields, kinds: tuple[str, ...] | None = None, what: str = "content_fields") -> None:
    """Before data loads: raise ``ConfigError`` unless the ``.item`` file has ``fields`` (of one of
    the ``kinds``, e.g. ``("token", "token_seq")``); add them to ``load_col`` (RecBole's ml-100k
    default loads interactions only).  A missing dataset is left to the dataset checks."""
    from recbole_ext.config import ConfigError

    header = item_file_header(config)
    if header is None and not os.path.isfile(os.path.join(config["data_path"], f"{config['dataset']}.inter")):
        return
    if header is None or any(f not in header for f in fields):
        raise ConfigError(missing_content_message(config["model"], config["dataset"], fields,
                                                  None if header is None else list(header), what))
    wrong = [f"{f} ({header[f]})" for f in fields if kinds and header[f] not in kinds]
    if wrong:
        raise ConfigError(f"{config['model']}: the item field{'s' if len(wrong) > 1 else ''} {', '.join(wrong)} "
                          f"cannot be used: {what} must be {' or '.join(kinds)} fields of {config['dataset']}.item.")
    load_col = config["load_col"]
    if isinstance(load_col, dict):
        item_cols = list(load_col.get("item") or [config["ITEM_ID_FIELD"]])
        load_col["item"] = item_cols + [f for f in fields if f not in item_cols]


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


def item_content(dataset, fields, train_items: np.ndarray | None = None, min_count: int = 1,
                 model: str = "the model") -> ItemContent:
    """Encode ``fields`` of RecBole ``dataset.item_feat`` as :class:`ItemContent`.

    ``train_items``: item ids the vocabulary and scaling are fitted on (default: all items).
    Raises :class:`MissingContentError` naming the fields when the dataset lacks them."""
    fields = _fields_of(fields)
    feat = dataset.item_feat
    available = [] if feat is None else [f for f in feat.columns if f != dataset.iid_field]
    if feat is None or any(f not in available for f in fields):
        raise MissingContentError(missing_content_message(model, dataset.dataset_name, fields,
                                                          available if feat is not None else None))
    n_items = dataset.item_num
    fit_rows = np.arange(1, n_items) if train_items is None else np.asarray(train_items, dtype=np.int64)
    blocks, columns = [], []
    from recbole.utils import FeatureType

    for name in fields:
        kind = dataset.field2type[name]
        values = feat[name].numpy()
        if kind in (FeatureType.TOKEN, FeatureType.TOKEN_SEQ):
            tokens = values.reshape(n_items, -1)                          # (I, L) token ids, 0 = padding
            n_tokens = dataset.num(name)
            hot = np.zeros((n_items, n_tokens), dtype=np.float32)
            rows = np.repeat(np.arange(n_items), tokens.shape[1])
            hot[rows, tokens.reshape(-1)] = 1.0
            hot[:, 0] = 0.0                                               # padding token
            df = hot[fit_rows].sum(axis=0)
            keep = np.flatnonzero(df >= max(1, min_count))
            blocks.append(hot[:, keep])
            id2token = dataset.field2id_token[name]
            columns += [f"{name}={id2token[t]}" for t in keep]
        elif kind in (FeatureType.FLOAT, FeatureType.FLOAT_SEQ):
            x = values.reshape(n_items, -1).astype(np.float32)
            lo, hi = x[fit_rows].min(axis=0), x[fit_rows].max(axis=0)
            scaled = np.clip((x - lo) / np.where(hi > lo, hi - lo, 1.0), 0.0, 1.0)
            blocks.append(scaled.astype(np.float32))
            columns += [name] if x.shape[1] == 1 else [f"{name}[{i}]" for i in range(x.shape[1])]
        else:
            raise MissingContentError(f"{model}: item field {name!r} has type {kind.value}; content fields must be "
                                      "token, token_seq, float or float_seq.")
    matrix = np.concatenate(blocks, axis=1) if blocks else np.zeros((n_items, 0), np.float32)
    matrix[0] = 0.0
    if matrix.shape[1] == 0:
        fix = (f"lower content_min_count (now {min_count})" if min_count > 1 else
               "choose item fields whose values the training items carry")
        raise MissingContentError(f"{model}: the item fields {', '.join(fields) or '(none)'} give no column that "
                                  f"at least {min_count} training item(s) share; {fix}.")
    return ItemContent(np.ascontiguousarray(matrix), columns, fields)


@dataclass
class ContentTables(InteractionTables):
    """:class:`~lightning_genrec.data.InteractionTables` plus item content, for models that
    train on items (CVAE): one training unit per item with training interactions, a batch
    is ``{"item": (B,), "content": (B, D)}``.  Evaluation rows are the users' rows, as for MVAE.

    Config keys: ``content_fields`` (item fields, default ``[class, movie_title, release_year]``)
    and ``content_min_count`` (a token needs this many training items, default 2)."""

    content: ItemContent | None = None

    @classmethod
    def from_train_dataset(cls, dataset, config=None) -> "ContentTables":
        tables = super().from_train_dataset(dataset, config)
        min_count = config["content_min_count"] if config is not None and "content_min_count" in config else None
        model = config["model"] if config is not None and "model" in config else "the model"
        tables.content = item_content(dataset, content_fields_of(config), tables.train_items(),
                                      2 if min_count is None else int(min_count), model=model)
        return tables

    def train_units(self) -> np.ndarray:
        return self.train_items()

    def train_batch(self, units) -> dict[str, torch.Tensor]:
        items = np.asarray(units, dtype=np.int64)
        return {"item": torch.from_numpy(items), "content": torch.from_numpy(self.content.matrix[items])}
