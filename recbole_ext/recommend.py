"""Recommendations out of a saved model: top-N items for users, for a guest, and top-N users for a
new item.

``Recommender(checkpoint)`` loads a RecBole checkpoint (the ``saved/<Model>-<date>.pth`` that
``run_recbole`` writes) of any lightning-genrec model with its data set, once; then

* ``top_items(users, k)``: the top-k items for users of the data set (their external ids);
* ``for_guest(items=..., tokens=..., k)``: the top-k items for someone in no training data who
  only names a few liked items, or tokens of an item field (genres): the model folds the guest's
  pseudo-history in without retraining (MVAE, SVAE, CVAE's user step, CFGAN in user mode, LARA);
* ``users_for_new_item(features, k)``: the top-k users for an item that is not in the data, known
  only by its item fields (LARA: its attributes; CVAE: its content).

Ids go in and come out as the data set's external tokens, with titles where the ``.item`` file has
a title field.  Seen items are excluded by default.  Every answer is a ``pandas.DataFrame``.

Which history a user is scored from (``history``):
``"all"`` (default) every interaction of the user in the data set (training, validation and test):
what is known about them now, the input a deployed model would read;
``"train"`` what the model was trained on: each user's training interactions (a held-out user of the
held-out user protocol: their fold-in), as the model's data form holds them.
The same history is what ``exclude_seen`` removes.

``recommend(checkpoint, users, k)`` is the one-call form; ``python -m recbole_ext recommend ...``
the command line (``--help``).  RecBole's own ``load_data_and_model`` + ``full_sort_topk`` work
too, with RecBole's internal ids and its test-time exclusions.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from lightning_genrec.data import _csr_from_lists
from lightning_genrec.errors import RecommendError
from lightning_genrec.sequences import pad
from recbole_ext.compat import load_data_and_model
from recbole_ext.model_settings import is_genrec_model

#: .item fields read as an item's title, first match wins
TITLE_FIELDS = ("movie_title", "title", "name", "item_name", "artist_name", "book_title")
HISTORIES = ("all", "train")


def _as_list(values) -> list:
    if values is None:
        return []
    if isinstance(values, (str, int, np.integer)):
        return [values]
    return list(values)


def _limit(n: int, k: int) -> int:
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise RecommendError(f"k must be a positive whole number, got {k!r}.")
    return min(int(k), n)


class Recommender:
    """A trained lightning-genrec model and its data set, loaded from a RecBole checkpoint.

    ``checkpoint``: the ``.pth`` file ``run_recbole`` saved.  ``device``: where to score (default:
    the first GPU if there is one, else the CPU; a GPU checkpoint loads on a CPU machine).
    ``quiet``: keep RecBole's data-loading log off the console."""

    def __init__(self, checkpoint: str, device: str | torch.device | None = None, quiet: bool = True):
        device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        updates = {"device": device, "use_gpu": device.type == "cuda", "show_progress": False}
        if quiet:
            updates["state"] = "WARNING"
        config, model, dataset, train_data, _, _ = load_data_and_model(checkpoint, config_updates=updates)
        if not is_genrec_model(type(model)):
            raise RecommendError(f"{checkpoint} holds RecBole's {config['model']}, not a lightning-genrec model; "
                                 "use RecBole's load_data_and_model and full_sort_topk for it.")
        self.checkpoint, self.config, self.dataset = checkpoint, config, dataset
        self.model_name = config["model"]
        self.module = model.module.eval()
        self.data = model.data
        self.device = device
        self.uid_field, self.iid_field = dataset.uid_field, dataset.iid_field
        self.n_items = dataset.item_num
        self._histories: dict[str, list[np.ndarray] | None] = {"train": None, "all": None}
        self._titles: dict[str, str] | None = None

    # -- ids -------------------------------------------------------------------------------------
    def _ids(self, field: str, tokens: Iterable, what: str) -> np.ndarray:
        """Internal ids of external ``tokens`` of ``field``; one error naming every unknown token."""
        tokens = [str(t) for t in tokens]
        known = self.dataset.field2token_id[field]
        missing = [t for t in tokens if t not in known or t == "[PAD]"]
        if missing:
            sample = ", ".join(list(self.dataset.field2id_token[field][1:6]))
            raise RecommendError(f"{what} not in {self.dataset.dataset_name}: "
                                 f"{', '.join(missing[:20])}{' ...' if len(missing) > 20 else ''} "
                                 f"(its {what} look like: {sample}, ...).")
        return np.array([known[t] for t in tokens], dtype=np.int64)

    def _tokens(self, field: str, ids: np.ndarray) -> list[str]:
        id2token = self.dataset.field2id_token[field]
        return [str(id2token[i]) for i in ids]

    @property
    def titles(self) -> dict[str, str]:
        """External item id -> title, from the data set's ``.item`` file (empty when it has no title field)."""
        if self._titles is None:
            self._titles = read_titles(self.config)
        return self._titles

    # -- histories -------------------------------------------------------------------------------
    def _ordered(self, dataset) -> list[np.ndarray]:
        """Each user's items in ``dataset``, in time order where the data has times (file order otherwise)."""
        inter = dataset.inter_feat
        users = inter[self.uid_field].numpy().astype(np.int64)
        items = inter[self.iid_field].numpy().astype(np.int64)
        time_field = self.dataset.time_field
        if time_field and time_field in inter.columns:
            order = np.lexsort((inter[time_field].numpy(), users))
        else:
            order = np.argsort(users, kind="stable")
        users, items = users[order], items[order]
        ptr = np.searchsorted(users, np.arange(self.dataset.user_num + 1))
        seqs = [items[ptr[u]:ptr[u + 1]] for u in range(self.dataset.user_num)]
        list_field = self.iid_field + self.config["LIST_SUFFIX"]
        if list_field in inter.columns:
            # RecBole's sequential data sets keep one row per target with the items before it as a list: a
            # user's first item is a target of no row, only the start of their earliest row's list
            lists = inter[list_field].numpy()[order]
            lengths = inter[self.config["ITEM_LIST_LENGTH_FIELD"]].numpy()[order]
            seqs = [np.concatenate([lists[ptr[u], :lengths[ptr[u]]].astype(np.int64), s]) if len(s) else s
                    for u, s in enumerate(seqs)]
        return seqs

    def _training_histories(self) -> list[np.ndarray]:
        """What the model was trained on, per user, as its data form holds it: sequences in time order
        (SVAE) or training rows; a held-out user (held-out user protocol): their fold-in."""
        n = self.dataset.user_num
        train, foldin = self.data.train, getattr(self.data, "foldin", None)
        if isinstance(train, sp.spmatrix):
            rows = train if foldin is None else ((train + foldin) > 0).astype(np.float32).tocsr()
            return [rows.indices[rows.indptr[u]:rows.indptr[u + 1]].astype(np.int64) for u in range(n)]
        seqs = [train[u] for u in range(n)]
        if foldin is not None:
            seqs = [np.concatenate([s, foldin[u]]) for u, s in enumerate(seqs)]
        return seqs

    def _history(self, history: str) -> list[np.ndarray]:
        if history not in HISTORIES:
            raise RecommendError(f"history must be one of {', '.join(HISTORIES)}, got {history!r}.")
        if self._histories[history] is None:
            if history == "train":
                self._histories[history] = self._training_histories()
            elif getattr(self.dataset, "lean_sequences", False):    # every user's whole sequence, kept once
                ptr, items = self.dataset.sequence_all
                self._histories[history] = [items[ptr[u]:ptr[u + 1]] for u in range(self.dataset.user_num)]
            else:
                self._histories[history] = self._ordered(self.dataset)
        return self._histories[history]

    def _matrix(self, seqs: Sequence[np.ndarray]) -> sp.csr_matrix:
        """(len(seqs), I) binary rows of these histories (repeated interactions count once)."""
        return _csr_from_lists(len(seqs), self.n_items, range(len(seqs)), seqs)

    # -- scoring ---------------------------------------------------------------------------------
    def item_scores(self, users, history: str = "all") -> torch.Tensor:
        """(B, I) the model's raw scores of every item id (column 0 is RecBole's padding item) for
        ``users`` (external ids), read from their ``history``; nothing excluded."""
        ids = self._ids(self.uid_field, [str(u) for u in _as_list(users)], "user ids")
        seqs = self._history(history)
        return self._scores(ids, [seqs[i] for i in ids])

    @torch.no_grad()
    def _scores(self, users: np.ndarray | None, seqs: Sequence[np.ndarray]) -> torch.Tensor:
        """(B, I) scores for rows with these histories (``users``: their internal ids, None for guests)."""
        if getattr(self.module, "sequential", False):
            max_len = getattr(self.data, "max_len", 50)
            cut = [s[-max_len:] if len(s) else np.zeros(0, np.int64) for s in seqs]
            batch = {"seq": pad(cut), "length": torch.tensor([len(s) for s in cut], dtype=torch.int64)}
        else:
            batch = {"input": torch.from_numpy(self._matrix(seqs).toarray())}
        if users is not None:
            batch["user"] = torch.from_numpy(users)
        batch = {k: v.to(self.device) for k, v in batch.items()}
        return self.module.score(batch).float()

    def _rank(self, scores: torch.Tensor, exclude: Sequence[np.ndarray] | None, k: int
              ) -> tuple[np.ndarray, np.ndarray]:
        scores = scores.clone()
        scores[:, 0] = -torch.inf                                              # RecBole's padding item
        if exclude is not None:
            rows = np.repeat(np.arange(len(exclude)), [len(e) for e in exclude])
            cols = np.concatenate(exclude) if len(exclude) else np.zeros(0, np.int64)
            scores[torch.from_numpy(rows), torch.from_numpy(cols.astype(np.int64))] = -torch.inf
        top = torch.topk(scores, k, dim=1)
        return top.values.cpu().numpy(), top.indices.cpu().numpy()

    def _item_rows(self, user_tokens: list[str], values: np.ndarray, indices: np.ndarray) -> pd.DataFrame:
        frames = []
        for token, v, idx in zip(user_tokens, values, indices):
            keep = np.isfinite(v)                                  # fewer than k unseen items left
            items = self._tokens(self.iid_field, idx[keep])
            frame = pd.DataFrame({"user": token, "rank": np.arange(1, keep.sum() + 1), "item": items,
                                  "score": v[keep]})
            if self.titles:
                frame["title"] = [self.titles.get(i, "") for i in items]
            frames.append(frame)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
            columns=["user", "rank", "item", "score"])

    def top_items(self, users, k: int = 10, exclude_seen: bool = True, history: str = "all",
                  batch_size: int = 256) -> pd.DataFrame:
        """Top-``k`` items for ``users`` (external ids of the data set): a DataFrame with one row per
        (user, rank): ``user``, ``rank`` (1 = best), ``item``, ``score`` and, where the data set has
        titles, ``title``."""
        tokens = [str(u) for u in _as_list(users)]
        if not tokens:
            raise RecommendError("no users given: name at least one user id of the data set.")
        ids = self._ids(self.uid_field, tokens, "user ids")
        k = _limit(self.n_items - 1, k)
        seqs = self._history(history)
        frames = []
        for start in range(0, len(ids), batch_size):
            u = ids[start:start + batch_size]
            rows = [seqs[i] for i in u]
            scores = self._scores(u, rows)
            values, indices = self._rank(scores, rows if exclude_seen else None, k)
            frames.append(self._item_rows(tokens[start:start + batch_size], values, indices))
        return pd.concat(frames, ignore_index=True)

    def for_guest(self, items=None, tokens: Mapping[str, Iterable[str]] | None = None, k: int = 10,
                  per_token: int = 10, exclude_seen: bool = True) -> pd.DataFrame:
        """Top-``k`` items for a guest who is in no training data: ``items`` they liked (external
        item ids, in the order they met them, which SVAE reads), and/or ``tokens``: ``{field:
        [token, ...]}`` of an item field (``{"class": ["Comedy", "Romance"]}``), each standing for the
        ``per_token`` items carrying the token that most training users interacted with.  The
        model scores that pseudo-history without retraining; its items are excluded from the list
        (``exclude_seen``).  ``user`` is ``"guest"`` in the result."""
        if self.model_name == "CFGAN" and getattr(self.module.hparams, "mode", "user") == "item":
            raise RecommendError("CFGAN in item mode scores a user through weights learned for that user, so it "
                                 "cannot score a guest without retraining; train CFGAN with mode: user (or use "
                                 "MVAE, SVAE, CVAE or LARA) to fold in a guest.")
        if not isinstance(per_token, (int, np.integer)) or isinstance(per_token, bool) or per_token < 1:
            raise RecommendError(f"per_token must be a positive whole number, got {per_token!r}.")
        liked = list(self._ids(self.iid_field, _as_list(items), "item ids")) if items is not None else []
        for field, values in (tokens or {}).items():
            liked += [i for i in self._items_with(field, _as_list(values), per_token) if i not in liked]
        if not liked:
            raise RecommendError("a guest needs at least one liked item or one item-field token to be scored.")
        seq = np.array(liked, dtype=np.int64)
        k = _limit(self.n_items - 1, k)
        values, indices = self._rank(self._scores(None, [seq]), [seq] if exclude_seen else None, k)
        return self._item_rows(["guest"], values, indices)

    def _items_with(self, field: str, values: list[str], per_token: int) -> list[int]:
        """For each token of item field ``field`` (read from the ``.item`` file, whether or not the
        model loaded it): its ``per_token`` items that most training users interacted with."""
        fields = item_file_fields(self.config)
        if field not in fields or field == self.iid_field:
            listed = ", ".join(f"{n} ({t})" for n, t in fields.items() if n != self.iid_field) or "none"
            raise RecommendError(f"the .item file of {self.config['dataset']} has no field {field!r} "
                                 f"(its fields: {listed}).")
        if fields[field] not in ("token", "token_seq"):
            raise RecommendError(f"item field {field!r} is {fields[field]}; a guest names tokens of token or "
                                 "token_seq fields (genres, tags).")
        column = read_item_column(self.config, field)
        known = self.dataset.field2token_id[self.iid_field]
        split = fields[field] == "token_seq"
        carriers: dict[str, list[int]] = {}
        for item, text in column.items():
            if item in known:
                for token in (text.split(self.config["seq_separator"] or " ") if split else [text]):
                    carriers.setdefault(token, []).append(known[item])
        missing = [v for v in values if v not in carriers]
        if missing:
            raise RecommendError(f"no item of {self.config['dataset']} carries {field} {', '.join(missing)} "
                                 f"(its {field} values: {', '.join(sorted(carriers)[:30])}).")
        counts = np.asarray(self.data.item_counts, dtype=np.float64)
        chosen: list[int] = []
        cold = [v for v in values if not any(counts[i] > 0 for i in carriers[v])]
        if cold:
            raise RecommendError(f"no item carrying {field} {', '.join(cold)} has a training interaction: the model "
                                 "knows nothing that stands for it; name liked items instead.")
        for token in values:
            ids = np.unique([i for i in carriers[token] if counts[i] > 0]).astype(np.int64)   # "Horror Horror"
            best = ids[np.argsort(-counts[ids], kind="stable")][:per_token]
            chosen += [int(i) for i in best if int(i) not in chosen]
        return chosen

    def users_for_new_item(self, features: Mapping[str, object], k: int = 10, history: str = "all",
                           unknown: str = "error", batch_size: int = 1024) -> pd.DataFrame:
        """Top-``k`` users for an item that is not in the data set, described by its item fields:
        ``{"class": ["Comedy", "Drama"]}`` (LARA: its attribute fields; CVAE: its content fields;
        a token_seq field may also be one string of space-separated tokens, e.g. a title).
        ``unknown="ignore"`` drops tokens the training vocabulary lacks (title words) instead of
        raising.  Users are scored from their ``history``.  Columns: ``rank``, ``user``, ``score``."""
        if self.model_name == "LARA":
            vocab = self.data.attributes
        elif self.model_name == "CVAE":
            vocab = self.data.content
        else:
            raise RecommendError(f"{self.model_name} has no way to describe a new item: only LARA (item "
                                 "attributes) and CVAE (item content) rank users for an item that is not in the data.")
        x = torch.from_numpy(self._encode(vocab, features, unknown))[None]       # (1, D)
        seqs = self._history(history)
        users = np.arange(1, self.dataset.user_num)
        parts = []
        if self.model_name == "LARA":
            generated = self.module.generated_users_for(x)                       # (1, d)
            attrs = self.data.attributes.matrix
            for start in range(0, len(users), batch_size):
                counts = self._matrix([seqs[u] for u in users[start:start + batch_size]]) @ attrs   # (B, A)
                parts.append((generated @ torch.from_numpy(np.asarray(counts, np.float32)).to(self.device).T)[0])
        else:
            v = self.module.content_factors(x)[0]                                 # (K,)
            for start in range(0, len(users), batch_size):
                rows = torch.from_numpy(self._matrix([seqs[u] for u in users[start:start + batch_size]]).toarray())
                parts.append(self.module.user_factors(rows.to(self.device)) @ v)
        scores = torch.cat(parts).float()
        k = _limit(len(users), k)
        top = torch.topk(scores, k)
        return pd.DataFrame({"rank": np.arange(1, k + 1),
                             "user": self._tokens(self.uid_field, users[top.indices.cpu().numpy()]),
                             "score": top.values.cpu().numpy()})

    def _encode(self, vocab, features: Mapping[str, object], unknown: str) -> np.ndarray:
        """A new item's row in the columns of ``vocab`` (``field=token`` columns, min-max scaled floats)."""
        if unknown not in ("error", "ignore"):
            raise RecommendError(f"unknown must be 'error' or 'ignore', got {unknown!r}.")
        if not features:
            raise RecommendError(f"describe the new item by its {', '.join(vocab.fields)} "
                                 f"(e.g. {{{vocab.fields[0]!r}: [...]}}).")
        extra = [f for f in features if f not in vocab.fields]
        if extra:
            raise RecommendError(f"{self.model_name} reads the item fields {', '.join(vocab.fields)}; it was "
                                 f"trained without {', '.join(map(str, extra))}.")
        where = {c: j for j, c in enumerate(vocab.columns)}
        x = np.zeros(vocab.dim, np.float32)
        missing, known = [], False
        for field, value in features.items():
            kind = self.dataset.field2type[field].value
            if kind in ("float", "float_seq"):
                x[self._float_columns(vocab, field)] = self._scaled(field, value)
                known = True
                continue
            values = value.split() if isinstance(value, str) and kind == "token_seq" else _as_list(value)
            for token in map(str, values):
                j = where.get(f"{field}={token}")
                if j is None:
                    missing.append(f"{field}={token}")
                else:
                    x[j] = 1.0
                    known = True
        if missing and unknown == "error":
            raise RecommendError(f"not in the training vocabulary of {self.model_name}: {', '.join(missing[:20])} "
                                 "(a misspelling, or a token no training item carried; unknown='ignore' / "
                                 "--ignore_unknown drops them).")
        if not known:
            raise RecommendError("none of the given features is known to the model: nothing describes the item.")
        return x

    def _float_columns(self, vocab, field: str) -> list[int]:
        return [j for j, c in enumerate(vocab.columns) if c == field or c.startswith(f"{field}[")]

    def _scaled(self, field: str, value) -> np.ndarray:
        """``value`` min-max scaled by the range over the items the content was fitted on, as it was."""
        x = self.dataset.item_feat[field].numpy().reshape(self.n_items, -1).astype(np.float64)
        fit = x[getattr(self.data, "learned_items", self.data.train_items)()]
        lo, hi = fit.min(axis=0), fit.max(axis=0)
        v = np.asarray(_as_list(value), dtype=np.float64)
        return np.clip((v - lo) / np.where(hi > lo, hi - lo, 1.0), 0.0, 1.0)


def item_file_fields(config) -> dict[str, str]:
    """Field name -> RecBole type of the ``.item`` atomic file of ``config``'s data set (empty without one)."""
    path = os.path.join(config["data_path"], f"{config['dataset']}.item")
    if not os.path.isfile(path):
        return {}
    with open(path, encoding=config["encoding"] or "utf-8") as f:
        header = f.readline().rstrip("\n").split(config["field_separator"] or "\t")
    return dict(h.split(":", 1) if ":" in h else (h, "token") for h in header)


def read_item_column(config, field: str) -> dict[str, str]:
    """External item id -> the raw text of ``field`` in the ``.item`` atomic file of ``config``'s data set."""
    path = os.path.join(config["data_path"], f"{config['dataset']}.item")
    names = list(item_file_fields(config))
    iid = config["ITEM_ID_FIELD"]
    wanted = sorted({names.index(iid), names.index(field)})
    frame = pd.read_csv(path, sep=config["field_separator"] or "\t", usecols=wanted, dtype=str, header=0,
                        encoding=config["encoding"] or "utf-8", keep_default_na=False, quoting=3)
    frame.columns = [names[i] for i in wanted]
    return dict(zip(frame[iid], frame[field]))


def read_titles(config) -> dict[str, str]:
    """External item id -> title from the ``.item`` atomic file of ``config``'s data set
    (the first of :data:`TITLE_FIELDS` it has); empty when it has none."""
    fields = item_file_fields(config)
    title = next((t for t in TITLE_FIELDS if t in fields), None)
    if title is None or config["ITEM_ID_FIELD"] not in fields:
        return {}
    return read_item_column(config, title)


def recommend(checkpoint: str, users, k: int = 10, exclude_seen: bool = True, history: str = "all") -> pd.DataFrame:
    """The top-``k`` items for ``users`` (external ids) from a saved model: ``Recommender(checkpoint)
    .top_items(users, k)``.  Load a :class:`Recommender` once to ask several questions."""
    return Recommender(checkpoint).top_items(users, k, exclude_seen=exclude_seen, history=history)


__all__ = ["Recommender", "item_file_fields", "read_item_column", "read_titles", "recommend"]
