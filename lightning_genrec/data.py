"""The data forms the models train and evaluate on, and the loaders that serve them.

RecBole loads, filters and splits (``create_dataset`` / ``data_preparation``);
:class:`InteractionData` holds its output in the form our models train on: one
row per user (Liang et al.), served by ordinary ``DataLoader``\\ s over user
indices, so Lightning's DDP can shard them.  Evaluation rows carry exactly what
RecBole's full-sort loader uses -- the same users, the same excluded history,
the same held-out positives and, where a protocol restricts what is ranked
(``candidate_items`` of the loader: ``recbole_ext.cold_start``), the same
candidate items -- so our metrics rank the same candidate sets as RecBole's
evaluator.  Only a batch is ever dense: the splits keep each user's real
history sparse, and a candidate set is one list of items, applied to a batch's
rows when it is built.

The forms read RecBole's dataset and loader objects but never its ``Config``:
every setting is an explicit argument (``recbole_ext.model_settings.data_options`` reads
them from a config; ``recbole_ext.RecBoleDataModule`` builds the forms).

Item and user indices are RecBole's internal ids; column 0 is RecBole's
padding id and is never ranked.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence

import numpy as np
import scipy.sparse as sp
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler, RandomSampler, Sampler, SequentialSampler

from lightning_genrec.hparams import choice, setting


def _csr_from_lists(n_users: int, n_items: int, users: Sequence[int], item_lists: Sequence[Any]) -> sp.csr_matrix:
    rows, cols = [], []
    for u, items in zip(users, item_lists):
        items = np.asarray(items, dtype=np.int64).reshape(-1)
        rows.append(np.full(items.shape[0], u, dtype=np.int64))
        cols.append(items)
    rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    cols = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    data = np.ones(rows.shape[0], dtype=np.float32)
    m = sp.csr_matrix((data, (rows, cols)), shape=(n_users, n_items))
    m.data[:] = 1.0
    return m


@dataclass
class EvalSplit:
    """What one evaluation phase ranks: users with positives, items to exclude, the positives."""

    users: np.ndarray          # (N,) user ids with >= 1 positive
    exclude: sp.csr_matrix     # (U, I) each user's history items that are not ranked
    positives: sp.csr_matrix   # (U, I) held-out items
    candidates: np.ndarray | None = None   # (C,) the only items ranked (a protocol's candidate set); None: all

    def excluded(self, users: np.ndarray) -> np.ndarray:
        """(B, I) bool: what is not ranked for ``users`` (their history, items outside the candidates)."""
        return excluded_rows(self.exclude, self.candidates, users)


def excluded_rows(exclude: sp.csr_matrix, candidates: np.ndarray | None, users: np.ndarray) -> np.ndarray:
    """(B, I) bool: the ``users``' rows of ``exclude`` (U, I), and every column outside ``candidates``."""
    rows = exclude[np.asarray(users, dtype=np.int64)].toarray() > 0
    if candidates is not None:
        outside = np.ones(exclude.shape[1], dtype=bool)
        outside[candidates] = False
        rows |= outside
    return rows


def loader_candidates(loader) -> np.ndarray | None:
    """The items a RecBole full-sort loader ranks, where a protocol restricts them (its
    ``candidate_items``, set by ``recbole_ext.cold_start``); ``None``: every item."""
    candidates = getattr(loader, "candidate_items", None)
    return None if candidates is None else np.asarray(candidates, dtype=np.int64)


class NonZeros(NamedTuple):
    """A batch of mostly-zero rows held by their non-zero entries, row by row (row-major order).

    At ML-20M size a user's row is 0.5 % dense: MVAE normalises, drops out, reads (first layer) and
    scores (likelihood) a row through these entries instead of passing over ``B x I`` dense rows
    again and again.  A ``NamedTuple`` of tensors, so DataLoaders and Lightning move it as a batch."""

    rows: torch.Tensor       # (nnz,) row of each entry, ascending
    cols: torch.Tensor       # (nnz,) its column
    values: torch.Tensor     # (nnz,) its value
    offsets: torch.Tensor    # (B,) index of each row's first entry (``embedding_bag``'s offsets)
    width: int               # columns of the dense rows

    @classmethod
    def of(cls, x: torch.Tensor) -> "NonZeros":
        """From dense (B, width) rows."""
        rows, cols = x.nonzero(as_tuple=True)                       # row-major: rows ascending
        offsets = torch.searchsorted(rows, torch.arange(x.shape[0], device=x.device))
        return cls(rows, cols, x[rows, cols], offsets, x.shape[1])

    @classmethod
    def from_csr(cls, m: sp.csr_matrix) -> "NonZeros":
        """From a scipy CSR matrix's rows, without making them dense (explicit zeros dropped)."""
        m = m.tocsr()
        if not m.has_canonical_format or (m.nnz and not (m.data != 0).all()):
            m = m.copy()
            m.sum_duplicates()                                      # a repeated (row, col) is one entry
            m.eliminate_zeros()
        counts = np.diff(m.indptr)
        rows = np.repeat(np.arange(m.shape[0], dtype=np.int64), counts)
        return cls(torch.from_numpy(rows), torch.from_numpy(m.indices.astype(np.int64)),
                   torch.from_numpy(np.ascontiguousarray(m.data, dtype=np.float32)),
                   torch.from_numpy(m.indptr[:-1].astype(np.int64)), m.shape[1])

    @property
    def n_rows(self) -> int:
        return self.offsets.shape[0]

    @property
    def shape(self) -> torch.Size:
        """(B, width): the dense rows' shape."""
        return torch.Size((self.n_rows, self.width))

    @property
    def dtype(self) -> torch.dtype:
        return self.values.dtype

    def with_values(self, values: torch.Tensor) -> "NonZeros":
        return self._replace(values=values)

    def row_sums(self, values: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) each row's sum of ``values`` (default: the entries)."""
        v = self.values if values is None else values
        return torch.zeros(self.n_rows, dtype=v.dtype, device=v.device).index_add_(0, self.rows, v)

    def normalize(self, eps: float = 1e-12) -> "NonZeros":
        """``F.normalize(x, dim=1)``: every row divided by max(its L2 norm, eps)."""
        norm = self.row_sums(self.values * self.values).sqrt().clamp_min(eps)
        return self.with_values(self.values / norm[self.rows])

    def dropout(self, p: float) -> "NonZeros":
        """``F.dropout(x, p)``'s distribution, drawing random numbers for the non-zero entries
        only (dropping a zero changes nothing): each kept with probability 1 - p, scaled by
        1 / (1 - p).  Dropped entries stay listed, with value 0."""
        keep = torch.rand(self.values.shape[0], device=self.values.device) >= p
        return self.with_values(self.values * keep / (1.0 - p))

    def to(self, *args, **kwargs) -> "NonZeros":
        """``Tensor.to`` for a batch: the values as asked (device, dtype); the indices follow to
        the values' device and stay integers."""
        positional = len(args) >= 3                # Tensor.to(device, dtype, non_blocking, ...)
        if self.values.device.type == "cpu" and not positional and "non_blocking" not in kwargs:
            kwargs["non_blocking"] = True          # host -> device: from a pinned batch the GPU need not wait
        non_blocking = bool(args[2]) if positional else kwargs.get("non_blocking", False)
        values = self.values.to(*args, **kwargs)
        rows, cols, offsets = (t.to(values.device, non_blocking=non_blocking)
                               for t in (self.rows, self.cols, self.offsets))
        return NonZeros(rows, cols, values, offsets, self.width)

    def to_dense(self) -> torch.Tensor:
        x = torch.zeros(self.n_rows, self.width, dtype=self.values.dtype, device=self.values.device)
        x[self.rows, self.cols] = self.values
        return x


def nonzeros(x: "torch.Tensor | NonZeros") -> NonZeros:
    """``x`` as :class:`NonZeros` (dense rows are converted)."""
    return x if isinstance(x, NonZeros) else NonZeros.of(x)


def dense(x: "torch.Tensor | NonZeros") -> torch.Tensor:
    """``x`` as dense rows: what a model that multiplies whole rows reads from ``batch["input"]``,
    whichever data form (dense :class:`InteractionData`, :class:`SparseRowData`) served the batch."""
    return x.to_dense() if isinstance(x, NonZeros) else x


TEST_INPUTS = ("train", "train_valid")
TEST_INPUT = setting(choice("test_input", "train", TEST_INPUTS,
                            "what test users are scored from: train (RecBole's convention) or train_valid (also "
                            "their validation interactions, e.g. the future-block protocol)."))


def check_test_input(value: str) -> str:
    """``value`` if it is one of :data:`TEST_INPUTS` (what a model reads when scoring test users)."""
    return TEST_INPUT.check(value)


@dataclass
class InteractionData:
    """A RecBole split in user-row form.

    Any data class serves the loaders below through the same small interface:
    ``train_examples()`` / ``train_batch(examples)`` for training, ``split(phase).users``
    / ``rows(users, phase)`` for evaluation, ``add_split(loader, phase)`` and
    ``recbole_batch(interaction, phase)`` for RecBole's entry point.
    """

    #: the data settings this form reads (config keys; ``recbole_ext.model_settings.data_options`` passes them)
    SETTINGS = (TEST_INPUT,)

    n_users: int                 # RecBole user_num (padding id 0 included)
    n_items: int                 # RecBole item_num (padding id 0 included)
    train: sp.csr_matrix         # (U, I) binary training interactions: the models' input
    item_counts: np.ndarray      # (I,) training interactions per item (Novelty)
    n_train_users: int           # users with >= 1 training interaction
    valid: EvalSplit | None = None
    test: EvalSplit | None = None
    test_input: str = "train"    # "train_valid": test users are scored from train + validation rows
    #: (U, I) binary fold-in rows of held-out users (the held-out user protocol, ``recbole_ext.heldout_users``):
    #: what such a user is scored from; ``None`` when every evaluated user is a training user
    foldin: sp.csr_matrix | None = None

    @classmethod
    def from_train_dataset(cls, dataset, test_input: str = "train") -> "InteractionData":
        """From RecBole's training ``Dataset`` alone (what a RecBole model is built with).

        ``test_input``: ``'train'`` (test users are scored from their training rows) or
        ``'train_valid'`` (also from their validation rows)."""
        train = dataset.inter_matrix(form="csr").astype(np.float32)
        train.data[:] = 1.0  # duplicate interactions are one positive
        return cls(dataset.user_num, dataset.item_num, train.tocsr(), item_counts(dataset),
                   len(dataset.user_counter), test_input=check_test_input(test_input),
                   foldin=foldin_matrix(dataset))

    @classmethod
    def from_recbole(cls, train_data, valid_data=None, test_data=None, **options) -> "InteractionData":
        """From the three loaders of ``recbole.data.data_preparation``; ``options`` are
        :meth:`from_train_dataset`'s keyword arguments (of this class)."""
        data = cls.from_train_dataset(train_data._dataset, **options)
        data.add_split(valid_data, "valid")
        data.add_split(test_data, "test")
        return data

    def add_split(self, loader, phase: str) -> None:
        """Set ``valid`` or ``test`` from RecBole's full-sort loader for that phase."""
        setattr(self, phase, self._split_from_loader(loader, phase))

    def _split_from_loader(self, loader, phase) -> EvalSplit | None:
        if loader is None:
            return None
        if not hasattr(loader, "uid2positive_item"):
            raise ValueError(
                f"lightning-genrec models rank all items; the {phase} loader is "
                f"{type(loader).__name__}. Set eval_args: {{mode: full}} in the config."
            )
        users = np.asarray(loader.uid_list, dtype=np.int64)
        positives = _csr_from_lists(self.n_users, self.n_items, users, loader.uid2positive_item[users])
        exclude = _csr_from_lists(self.n_users, self.n_items, users, loader.uid2history_item[users])
        return EvalSplit(users, exclude, positives, loader_candidates(loader))

    def split(self, phase: str) -> EvalSplit:
        s = getattr(self, phase)
        if s is None:
            raise ValueError(f"this data has no {phase} split")
        return s

    def train_users(self) -> np.ndarray:
        return np.flatnonzero(np.diff(self.train.indptr) > 0)

    def train_items(self) -> np.ndarray:
        """Items with at least one training interaction (a content model may learn from more items:
        ``ContentData.learned_items``)."""
        return np.flatnonzero(self.item_counts > 0)

    def train_examples(self) -> np.ndarray:
        """What one training epoch visits: every user with training interactions."""
        return self.train_users()

    def train_batch(self, examples) -> dict:
        return self.rows(examples)

    def _input_rows(self, u: np.ndarray, phase: str | None) -> sp.csr_matrix:
        """(B, I) binary rows ``users`` are scored from (``phase``) or trained on (``None``)."""
        x = self.train[u]
        if phase is not None and self.foldin is not None:   # held-out users: no training rows, their fold-in
            x = x.maximum(self.foldin[u])
        if phase == "test" and self.test_input == "train_valid":
            x = x.maximum(self.split("valid").positives[u])
        return x

    def _input(self, u: np.ndarray, phase: str | None):
        """The batch's ``input``: the rows as a dense (B, I) float tensor."""
        return torch.from_numpy(self._input_rows(u, phase).toarray())

    def recbole_batch(self, interaction, uid_field: str, phase: str | None = None) -> dict:
        """The model's input for a RecBole evaluation batch (its user ids)."""
        return self.user_batch(interaction[uid_field].cpu().numpy(), phase)

    def user_batch(self, users: np.ndarray, phase: str | None = None) -> dict:
        """The model's input to score ``users`` (ids) for ``phase``: ``user`` and ``input``."""
        u = np.asarray(users, dtype=np.int64)
        return {"user": torch.from_numpy(u), "input": self._input(u, phase)}

    def rows(self, users, phase: str | None = None) -> dict:
        """A batch for ``users``: ``input`` (B, I) float rows (training rows; for ``test``
        with ``test_input='train_valid'`` also the validation rows; dense here, :class:`NonZeros`
        in :class:`SparseRowData`); with a phase also
        ``exclude`` (B, I) bool, what is not ranked (the history, items outside the phase's
        candidates), and ``target`` (B, I) bool."""
        u = np.asarray(users, dtype=np.int64)
        batch = {"user": torch.from_numpy(u), "input": self._input(u, phase)}
        if phase is not None:
            s = self.split(phase)
            batch["exclude"] = torch.from_numpy(s.excluded(u))
            batch["target"] = torch.from_numpy(s.positives[u].toarray() > 0)
        return batch


class SparseRowData(InteractionData):
    """:class:`InteractionData` whose batches hold the input rows as :class:`NonZeros`
    (``batch["input"]``), straight from the sparse matrices: for a model that reads only a
    row's entries (MVAE), no ``B x I`` dense input is made and scanned back.  What a batch
    ranks (``exclude``, ``target``) and the scores stay dense."""

    def _input(self, u: np.ndarray, phase: str | None) -> NonZeros:
        return NonZeros.from_csr(self._input_rows(u, phase))


def foldin_matrix(dataset) -> sp.csr_matrix | None:
    """``(user_num, item_num)`` binary rows of the held-out users' fold-in interactions that a
    protocol attached to RecBole's training ``dataset`` (``heldout_foldin``); ``None`` if it has none."""
    foldin = getattr(dataset, "heldout_foldin", None)
    if foldin is None:
        return None
    users, items = foldin[dataset.uid_field].numpy(), foldin[dataset.iid_field].numpy()
    m = sp.csr_matrix((np.ones(len(users), dtype=np.float32), (users, items)),
                      shape=(dataset.user_num, dataset.item_num))
    m.data[:] = 1.0  # duplicate interactions are one positive
    return m


def item_counts(dataset) -> np.ndarray:
    """``(item_num,)`` training interactions per item, as RecBole's evaluator counts them."""
    counts = np.zeros(dataset.item_num, dtype=np.int64)
    for item, n in dataset.item_counter.items():
        counts[int(item)] = n
    return counts


class _Users(Dataset):
    def __init__(self, users: np.ndarray):
        self.users = users

    def __len__(self):
        return len(self.users)

    def __getitem__(self, i):
        return int(self.users[i])


class _Collate:
    """Picklable collate: example ids -> a model batch (so worker processes can use it)."""

    def __init__(self, data, phase: str | None):
        self.data, self.phase = data, phase

    def __call__(self, examples):
        if self.phase is None:
            return self.data.train_batch(examples)
        return self.data.rows(examples, self.phase)


class ShardSampler(DistributedSampler):
    """Deterministic, *unpadded* sharding for evaluation: rank r gets items r, r+W, ...

    torch's ``DistributedSampler`` repeats samples to even out the shards, which
    would count some users twice in the metrics.  Being a ``DistributedSampler``,
    Lightning leaves it in place."""

    def __init__(self, dataset, num_replicas: int, rank: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)

    def __iter__(self):
        return iter(range(self.rank, len(self.dataset), self.num_replicas))

    def __len__(self):
        return len(range(self.rank, len(self.dataset), self.num_replicas))


class SharedBatches(Sampler):
    """Training minibatches shared by ``world_size`` processes: every process draws one process's
    batches of ``batch_size`` (the same seeded order), and process ``rank`` takes its contiguous part
    of each (sizes differ by at most one).  So N processes take as many optimizer steps as one
    process, each on the same examples: RecBole's convention, where ``train_batch_size`` is the
    global batch.  DDP averages the processes' mean losses, which is the batch's mean when the parts
    are equal; where they differ by one row, a row of a smaller part weighs a little more.  A part
    left empty (a batch smaller than ``world_size``) repeats the batch's first example, since every
    process must step together: keep ``train_batch_size`` well above the number of processes."""

    def __init__(self, n: int, batch_size: int, world_size: int, rank: int, shuffle: bool = True,
                 generator: torch.Generator | None = None):
        order = RandomSampler(range(n), generator=generator) if shuffle else SequentialSampler(range(n))
        self.batches = BatchSampler(order, batch_size, drop_last=False)
        self.world_size, self.rank = world_size, rank

    def __iter__(self):
        for batch in self.batches:
            part = np.array_split(np.asarray(batch), self.world_size)[self.rank]
            yield (part if len(part) else np.asarray(batch[:1])).tolist()

    def __len__(self) -> int:
        return len(self.batches)


def train_loader(data, batch_size: int, shuffle: bool = True, num_workers: int = 0,
                 seed: int | None = None, world_size: int = 1, rank: int = 0, pin_memory: bool = False) -> DataLoader:
    """One epoch over ``data.train_examples()`` (MVAE: one row per user with training
    interactions; SVAE: one window of each user's sequence).  With ``world_size > 1``,
    ``batch_size`` is the batch of all processes together (:class:`SharedBatches`); a
    ``DataLoader`` given to Lightning's DDP as it is counts ``batch_size`` per process instead.
    ``pin_memory``: batches in page-locked memory, copied to a GPU without stalling it."""
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    examples = data.train_examples()
    # a single example (a GAN round) is not shuffled: shuffling would only consume random numbers
    shuffle = shuffle and len(examples) > 1
    if world_size > 1:
        return DataLoader(_Users(examples), collate_fn=_Collate(data, None), num_workers=num_workers,
                          batch_sampler=SharedBatches(len(examples), batch_size, world_size, rank, shuffle, generator),
                          pin_memory=pin_memory)
    return DataLoader(_Users(examples), batch_size=batch_size, shuffle=shuffle, pin_memory=pin_memory,
                      collate_fn=_Collate(data, None), num_workers=num_workers, generator=generator)


#: the fewest scores an evaluation batch of a general model computes at once (8 M, 32 MB as
#: float32): RecBole's ``eval_batch_size`` counts scores, and at ML-20M's 26,744 items its 409,600
#: are 15 users, for whom a model's output layer (26,744 x 600 weights) is read whole: a product
#: that small is memory-bound, at about a third of the arithmetic rate of a few hundred rows.
SCORE_BLOCK = 1 << 23


def users_per_eval_batch(eval_batch_size: int, n_items: int, block: bool = True) -> int:
    """Users per evaluation batch.  RecBole's full-sort convention: ``eval_batch_size`` counts
    scores, i.e. users x items.  With ``block`` (general models) a whole number of such batches
    that holds about :data:`SCORE_BLOCK` scores, when that is more: the blocks the RecBole
    entry point scores too (``recbole_ext.registry.GenRecAdapter.plan_scoring``), so both entry
    points compute the same floats."""
    step = max(1, eval_batch_size // n_items)
    if not block:
        return step
    return max(step, SCORE_BLOCK // n_items // step * step)


def eval_loader(data, phase: str, batch_size: int, num_workers: int = 0,
                world_size: int = 1, rank: int = 0, pin_memory: bool = False) -> DataLoader:
    """Rows of the users RecBole evaluates in ``phase`` (``batch_size`` users a batch);
    sharded without padding when ``world_size > 1``."""
    users = _Users(data.split(phase).users)
    sampler = ShardSampler(users, world_size, rank) if world_size > 1 else None
    return DataLoader(users, batch_size=batch_size, shuffle=False, sampler=sampler, pin_memory=pin_memory,
                      collate_fn=_Collate(data, phase), num_workers=num_workers)
