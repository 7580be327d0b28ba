"""RecBole's data as time-ordered sequences, for sequential models (SVAE).

Two forms, chosen by the split RecBole was asked for:

* **next-item** (``eval_args.split: {LS: valid_and_test}``, RecBole's sequential
  default): RecBole's ``SequentialDataset`` -- every interaction but a user's
  first becomes a row ``(item_id_list, item_length) -> item_id``, and the last two
  rows of each user are validation and test.  A user's training sequence is
  rebuilt from the training rows (first item, then each row's target, in
  RecBole's order); a validation/test user is scored from exactly the history
  RecBole's row carries (its ``item_id_list``: the last ``MAX_ITEM_LIST_LENGTH``
  items), against its one target.  With lean rows (``sequence_rows: lean``, the
  default: :mod:`recbole_ext.lean_sequences`) the rows carry no list but their
  place in the user's sequence (``genrec_position``), and the dataset each
  user's whole sequence: a row's input is the items before that place -- the
  items RecBole's list holds.
* **block** (any other split with ``order: TO``, e.g. ``RS: [0.7, 0.1, 0.2]``):
  RecBole's ordinary ``Dataset`` split per user by time; each user's training
  interactions in time order are the sequence, and the held-out block (all of
  it) is the target, with RecBole's excluded history -- the same rows RecBole
  evaluates general models on, so the split is identical to MVAE's.

Truncation, as RecBole does it: a scoring input is the user's last
``MAX_ITEM_LIST_LENGTH`` items.  Training uses every interaction: a training
sequence longer than that is cut into consecutive windows of at most
``MAX_ITEM_LIST_LENGTH`` input steps (each window's targets may run into the
next), so every step trains with at most as much history as scoring uses.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from lightning_genrec.data import (TEST_INPUT, _csr_from_lists, check_test_input, excluded_rows, item_counts,
                                   loader_candidates)
from lightning_genrec.hparams import choice, flag, setting

#: lean next-item rows (recbole_ext.lean_sequences): a row's place in its user's time-ordered sequence
POSITION_FIELD = "genrec_position"


class Ragged:
    """Integer sequences stored flat: sequence ``u`` is ``items[ptr[u]:ptr[u + 1]]``."""

    def __init__(self, ptr: np.ndarray, items: np.ndarray):
        self.ptr, self.items = ptr.astype(np.int64), items.astype(np.int64)

    @classmethod
    def group(cls, n_groups: int, groups: np.ndarray, values: np.ndarray) -> "Ragged":
        """Sequences of ``values`` by ``groups`` (stable: order within a group is kept)."""
        groups = np.asarray(groups, dtype=np.int64)
        order = np.argsort(groups, kind="stable")
        counts = np.bincount(groups, minlength=n_groups)
        return cls(np.concatenate([[0], np.cumsum(counts)]), np.asarray(values, dtype=np.int64)[order])

    @classmethod
    def from_lists(cls, lists) -> "Ragged":
        lengths = [len(x) for x in lists]
        items = np.concatenate([np.asarray(x, dtype=np.int64) for x in lists]) if lists else np.zeros(0, np.int64)
        return cls(np.concatenate([[0], np.cumsum(lengths)]), items)

    def __getitem__(self, u: int) -> np.ndarray:
        return self.items[self.ptr[u]:self.ptr[u + 1]]

    def lengths(self) -> np.ndarray:
        return np.diff(self.ptr)

    def concat(self, other: "Ragged") -> "Ragged":
        """Per group: this sequence followed by ``other``'s (same number of groups)."""
        return Ragged.from_lists([np.concatenate([self[u], other[u]]) for u in range(len(self.ptr) - 1)])


def pad(seqs) -> torch.Tensor:
    """``(B, longest)`` int64, right-padded with RecBole's padding id 0 (at least one column)."""
    out = np.zeros((len(seqs), max([len(s) for s in seqs] + [1])), dtype=np.int64)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = s
    return torch.from_numpy(out)


class SeqEvalSplit:
    """One evaluation phase: each user's input sequence, held-out positives and excluded items
    (``exclude``: each user's history, or ``None``; ``candidates``: the only items ranked, or ``None``: all;
    block form only)."""

    def __init__(self, users: np.ndarray, inputs: list[np.ndarray], positives: sp.csr_matrix,
                 exclude: sp.csr_matrix | None, candidates: np.ndarray | None = None):
        self.users, self.positives, self.exclude, self.candidates = users, positives, exclude, candidates
        self.inputs = {int(u): s for u, s in zip(users, inputs)}


class SequenceData:
    """A RecBole split as time-ordered sequences (see the module docstring for the forms).

    Training examples are windows ``(user, start)``; a training batch has ``seq``
    (B, T + lookahead): the window's input items followed by the next ``lookahead``
    items (the targets beyond the window), zero-padded; and ``length`` (B,), the
    number of input steps.  An evaluation batch has ``seq`` (B, T) / ``length``
    (the scoring input), ``target`` and, where items are excluded, ``exclude``.
    """

    SETTINGS = (
        TEST_INPUT,
        setting(flag("exclude_history", False, "next-item form: also exclude the items a user has seen when "
                                               "ranking the next one (RecBole's sequential rule excludes nothing; "
                                               "the SVAE authors do).")),
        setting(choice("sequence_rows", "lean", ("lean", "recbole"),
                       "next-item form: lean keeps RecBole's rows without their item lists (the model rebuilds "
                       "each input from the sequences; memory of the interactions alone); recbole: RecBole's "
                       "augmented rows, every field's last MAX_ITEM_LIST_LENGTH values copied into each row.")),
    )

    def __init__(self, n_users: int, n_items: int, train: Ragged, counts: np.ndarray, n_train_users: int,
                 form: str, max_len: int, exclude_history: bool = False, test_input: str = "train",
                 lookahead: int = 1):
        self.n_users, self.n_items, self.train = n_users, n_items, train
        self.item_counts, self.n_train_users = counts, n_train_users
        self.form, self.max_len = form, int(max_len)
        self.exclude_history, self.test_input = bool(exclude_history), test_input
        self.lookahead = int(lookahead)
        self.valid: SeqEvalSplit | None = None
        self.test: SeqEvalSplit | None = None
        self._valid_seqs: Ragged | None = None   # block form: validation items in time order
        self._train_valid: Ragged | None = None  # block form: train then validation items (cached)
        #: block form, the held-out user protocol: each held-out user's fold-in in time order (their input)
        self.foldin: Ragged | None = None
        self._train_foldin: Ragged | None = None
        self.uid_field = self.iid_field = self.list_field = self.length_field = None
        self._examples: np.ndarray | None = None
        self.all_sequences: Ragged | None = None   # lean next-item rows: every user's whole sequence

    # -- construction ------------------------------------------------------------
    @classmethod
    def from_train_dataset(cls, dataset, max_len: int = 50, exclude_history: bool = False, test_input: str = "train",
                           lookahead: int = 1, sequence_rows: str = "lean") -> "SequenceData":
        """From RecBole's training ``Dataset``: its sequential dataset gives the next-item form,
        an ordinary one the block form.  ``max_len``: the longest input window (RecBole's
        ``MAX_ITEM_LIST_LENGTH``); ``exclude_history``: also exclude a user's earlier items when
        ranking the next one; ``test_input`` as for :class:`~lightning_genrec.data.InteractionData`;
        ``lookahead``: how many next items each step predicts (SVAE's ``next_k``); ``sequence_rows``:
        what RecBole's dataset was asked to build (the dataset itself says which rows it holds)."""
        form = "next_item" if hasattr(dataset, "item_list_length_field") else "block"
        inter = dataset.inter_feat
        uid = inter[dataset.uid_field].numpy()
        lean = bool(getattr(dataset, "lean_sequences", False))
        if form == "next_item":
            # rows are each user's interactions 2..n in RecBole's (time) order; the first item
            # only appears as the history of the user's first row (lean rows: kept aside)
            order = np.argsort(uid, kind="stable")
            uid_s, target_s = uid[order], inter[dataset.iid_field].numpy()[order]
            if lean:
                ptr, all_items = dataset.sequence_all
                first_users = np.unique(uid_s)
                firsts = all_items[ptr[first_users]]
            else:
                first_row = np.flatnonzero(np.r_[True, uid_s[1:] != uid_s[:-1]]) if len(uid_s) else np.zeros(0, int)
                first_users, firsts = uid_s[first_row], inter[dataset.item_id_list_field].numpy()[order][first_row, 0]
            # firsts go first in the concatenation, and grouping is stable: [first, targets...]
            train = Ragged.group(dataset.user_num, np.concatenate([first_users, uid_s]),
                                 np.concatenate([firsts, target_s]))
        else:
            train = Ragged.group(dataset.user_num, *_time_ordered(dataset, inter))
        data = cls(dataset.user_num, dataset.item_num, train, item_counts(dataset), len(dataset.user_counter),
                     form, max_len, exclude_history, check_test_input(test_input), max(1, int(lookahead)))
        data.uid_field, data.iid_field = dataset.uid_field, dataset.iid_field
        foldin = getattr(dataset, "heldout_foldin", None)   # recbole_ext.heldout_users: held-out users' fold-in
        if foldin is not None:
            if form != "block":
                raise ValueError("held-out users' fold-in needs the block form (RecBole's general dataset)")
            data.foldin = Ragged.group(dataset.user_num, *_time_ordered(dataset, foldin))
        if form == "next_item" and not lean:
            data.list_field, data.length_field = dataset.item_id_list_field, dataset.item_list_length_field
        if lean:
            data.all_sequences = Ragged(*dataset.sequence_all)
        return data

    @classmethod
    def from_recbole(cls, train_data, valid_data=None, test_data=None, **options) -> "SequenceData":
        data = cls.from_train_dataset(train_data._dataset, **options)
        data.add_split(valid_data, "valid")
        data.add_split(test_data, "test")
        return data

    def add_split(self, loader, phase: str) -> None:
        """Set ``valid`` / ``test`` from RecBole's full-sort loader of that phase."""
        if loader is None:
            setattr(self, phase, None)
            return
        if not hasattr(loader, "is_sequential"):
            raise ValueError(f"lightning-genrec models rank all items; the {phase} loader is "
                             f"{type(loader).__name__}. Set eval_args: {{mode: full}} in the config.")
        split = self._next_item_split(loader, phase) if self.form == "next_item" else self._block_split(loader, phase)
        setattr(self, phase, split)

    def _next_item_split(self, loader, phase) -> SeqEvalSplit:
        inter = loader._dataset.inter_feat
        users = inter[self.uid_field].numpy().astype(np.int64)
        if len(np.unique(users)) != len(users):
            raise ValueError(f"the {phase} split has several rows for some users; SVAE's next-item form "
                             "expects leave-one-out (eval_args.split: {LS: valid_and_test}).")
        if self.list_field is None:          # lean rows: the user's earlier items, as RecBole's list holds them
            inputs = self._earlier_items(users, inter[POSITION_FIELD].numpy())
        else:
            lists, lengths = inter[self.list_field].numpy(), inter[self.length_field].numpy()
            inputs = [lists[i, :lengths[i]].astype(np.int64) for i in range(len(users))]
        positives = _csr_from_lists(self.n_users, self.n_items, users, inter[self.iid_field].numpy().reshape(-1, 1))
        exclude = None
        if self.exclude_history:   # RecBole's rule for general models: everything seen, except the positives
            exclude = _csr_from_lists(self.n_users, self.n_items, users,
                                      [np.concatenate([self.train[u], s]) for u, s in zip(users, inputs)])
            exclude = (exclude - exclude.multiply(positives)).tocsr()
            exclude.eliminate_zeros()
        return SeqEvalSplit(users, inputs, positives, exclude)

    def _earlier_items(self, users: np.ndarray, positions: np.ndarray) -> list[np.ndarray]:
        """Lean rows: for each row (its user, its place in the user's sequence) the items before it, the
        last ``max_len`` of them -- what RecBole's row list holds."""
        ptr, items = self.all_sequences.ptr, self.all_sequences.items
        out = []
        for u, p in zip(np.asarray(users, dtype=np.int64), np.asarray(positions).astype(np.int64)):
            end = ptr[u] + p
            out.append(items[max(ptr[u], end - self.max_len):end])
        return out

    def _block_split(self, loader, phase) -> SeqEvalSplit:
        if loader.is_sequential:
            raise ValueError("block-form data need RecBole's general (non-sequential) loaders")
        users = np.asarray(loader.uid_list, dtype=np.int64)
        positives = _csr_from_lists(self.n_users, self.n_items, users, loader.uid2positive_item[users])
        exclude = _csr_from_lists(self.n_users, self.n_items, users, loader.uid2history_item[users])
        if phase == "valid":
            self._valid_seqs = Ragged.group(self.n_users, *_time_ordered(loader._dataset, loader._dataset.inter_feat))
            self._train_valid = None
        history = self._history(phase)
        inputs = [history[u][-self.max_len:] for u in users]
        return SeqEvalSplit(users, inputs, positives, exclude, loader_candidates(loader))

    def _history(self, phase: str | None) -> Ragged:
        """Block form: the sequences a phase is scored from (held-out users: their fold-in)."""
        if phase is not None and self.foldin is not None:
            if self._train_foldin is None:   # held-out users have no training items: this is their fold-in
                self._train_foldin = self.train.concat(self.foldin)
            return self._train_foldin
        if phase == "test" and self.test_input == "train_valid":
            if self._valid_seqs is None:
                raise ValueError("test_input='train_valid' needs the validation split")
            if self._train_valid is None:
                self._train_valid = self.train.concat(self._valid_seqs)
            return self._train_valid
        return self.train

    def split(self, phase: str) -> SeqEvalSplit:
        s = getattr(self, phase)
        if s is None:
            raise ValueError(f"these data have no {phase} split")
        return s

    # -- training ----------------------------------------------------------------
    def train_examples(self) -> np.ndarray:
        """Indices of training windows: each user's input steps 0..n-2 (the last item is
        only a target), ``max_len`` steps at a time."""
        if self._examples is None:
            lengths = self.train.lengths()
            users, starts = [], []
            for u in np.flatnonzero(lengths >= 2):
                s = np.arange(0, lengths[u] - 1, self.max_len)
                users.append(np.full(len(s), u))
                starts.append(s)
            self._window_table = (np.concatenate(users) if users else np.zeros(0, np.int64),
                                  np.concatenate(starts) if starts else np.zeros(0, np.int64))
            self._examples = np.arange(len(self._window_table[0]))
        return self._examples

    def train_batch(self, examples) -> dict[str, torch.Tensor]:
        self.train_examples()
        users, starts = self._window_table
        seqs, lengths = [], []
        for w in np.asarray(examples, dtype=np.int64):
            u, s = users[w], starts[w]
            full = self.train[u]
            end = min(s + self.max_len, len(full) - 1)          # input steps s .. end-1
            seqs.append(full[s:end + self.lookahead])          # inputs, then the targets past the window
            lengths.append(end - s)
        return {"user": torch.from_numpy(users[np.asarray(examples, dtype=np.int64)]), "seq": pad(seqs),
                "length": torch.tensor(lengths, dtype=torch.int64),
                "steps": max(lengths, default=0)}     # a host int: the model need not read the device for it

    # -- evaluation ----------------------------------------------------------------
    def rows(self, users, phase: str) -> dict[str, torch.Tensor]:
        s = self.split(phase)
        u = np.asarray(users, dtype=np.int64)
        inputs = [s.inputs[int(x)] for x in u]
        batch = {"user": torch.from_numpy(u), "seq": pad(inputs),
                 "length": torch.tensor([len(x) for x in inputs], dtype=torch.int64),
                 "target": torch.from_numpy(s.positives[u].toarray() > 0)}
        if s.exclude is not None:
            batch["exclude"] = torch.from_numpy(excluded_rows(s.exclude, s.candidates, u))
        return batch

    def recbole_batch(self, interaction, uid_field: str, phase: str | None = None) -> dict[str, torch.Tensor]:
        """The model's input for a RecBole evaluation batch.  Next-item form: the row's own
        ``item_id_list`` (and, with ``exclude_history``, its user's whole history as
        ``exclude``: RecBole's sequential loaders exclude nothing); block form: the user's
        sequence for ``phase`` (RecBole excludes the history itself)."""
        u = interaction[uid_field].cpu().numpy().astype(np.int64)
        if self.form == "next_item":
            if self.list_field is None:      # lean rows: the items before the row's place in its sequence
                inputs = self._earlier_items(u, interaction[POSITION_FIELD].cpu().numpy())
                seq = pad(inputs) if inputs else torch.zeros((0, 1), dtype=torch.int64)
                length = torch.tensor([len(x) for x in inputs], dtype=torch.int64)
            else:
                seq = interaction[self.list_field].cpu()
                length = interaction[self.length_field].cpu()
            batch = {"user": torch.from_numpy(u), "seq": seq, "length": length}
            if self.exclude_history:
                lists = seq.numpy()
                hist = [np.concatenate([self.train[x], lists[i, :length[i]]]) for i, x in enumerate(u)]
                exclude = _csr_from_lists(len(u), self.n_items, range(len(u)), hist).toarray() > 0
                targets = interaction[self.iid_field].cpu().numpy() if self.iid_field in interaction else None
                if targets is not None:          # the row's own target is never excluded (as above)
                    exclude[np.arange(len(u)), targets] = False
                batch["exclude"] = torch.from_numpy(exclude)
            return batch
        history = self._history(phase)
        inputs = [history[x][-self.max_len:] for x in u]
        return {"user": torch.from_numpy(u), "seq": pad(inputs),
                "length": torch.tensor([len(x) for x in inputs], dtype=torch.int64)}


def _time_ordered(dataset, inter) -> tuple[np.ndarray, np.ndarray]:
    """``(users, items)`` of ``inter`` in time order (stable: RecBole's order breaks ties)."""
    uid = inter[dataset.uid_field].numpy()
    iid = inter[dataset.iid_field].numpy()
    time_field = dataset.time_field
    if time_field is None or time_field not in inter:
        raise ValueError("sequences need the time field; it was not loaded")
    order = np.argsort(inter[time_field].numpy(), kind="stable")
    return uid[order], iid[order]
