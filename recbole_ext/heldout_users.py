"""The held-out user protocol (strong generalisation) of Liang et al. 2018 (Mult-VAE).

RecBole's splits divide each user's interactions, so every evaluated user was
also a training user (weak generalisation).  With ``heldout_user_split: true``,
``Dataset.build`` instead draws ``heldout_user_valid_ratio`` and
``heldout_user_test_ratio`` of the users (seeded by ``seed``); *all* their
interactions leave training.  Each held-out user's interactions are divided
once more: ``heldout_foldin_ratio`` of them (at random, seeded; with
``eval_args.order: TO`` the earliest by time) are the *fold-in*, the rest the
*targets*; as in Liang et al.'s code, a held-out user's interactions with items
no training user has are dropped first (those items stay in the ranking; they
cannot be targets).  A held-out user left with fewer than
``1 / (1 - heldout_foldin_ratio)`` interactions has no target and is not
evaluated (a warning says how many).  Training keeps every interaction of the remaining users.  A sequential model
(SVAE) reads the protocol in its block form, with ``eval_args.order: TO`` (so the fold-in is the
first 80 % by time and the targets come after it, as in the SVAE paper).

A model scores a held-out user from the fold-in alone, without retraining: the
fold-in is the user's input row, it is excluded from ranking, and the targets
are the positives.  Validation users select the epoch; test users report.

How the pieces carry it:

* the three dataset parts (training, validation targets, test targets) share
  ``heldout_foldin``, an ``Interaction`` of every held-out user's fold-in rows;
* RecBole's full-sort loader adds each of its users' fold-in items to
  ``uid2history_item`` (so RecBole's ``Trainer``, ``case_study`` and our data
  forms exclude them), while the positives stay the targets;
* lightning-genrec's data forms read the fold-in from the training dataset
  (``InteractionData.foldin``) and use it as the evaluation input row
  (MVAE, CFGAN ``mode: user``, CVAE's closed-form user step; SVAE reads the fold-in
  as the user's sequence, in time order);
* RecBole's models that score from the interaction history learn it right
  after they are built from the training dataset (:data:`RECBOLE_MODELS`):
  EASE and ItemKNN keep the B / similarity learned from training users and
  score a held-out user as fold-in row @ B; MultiVAE and MultiDAE read the
  fold-in as the user's history row; Pop needs nothing.  Models with learned
  per-user parameters cannot score an unseen user and are refused (before any
  data loads) with :class:`~lightning_genrec.errors.ConfigError`.

Memory: the fold-in is a list of interactions (sparse rows); only an
evaluation batch is dense.
"""
from __future__ import annotations

import logging

import numpy as np
import torch
from recbole.data.interaction import cat_interactions
from recbole.utils import ModelType

from lightning_genrec.errors import ConfigError
from lightning_genrec.hparams import flag, number, setting
from lightning_genrec.models import CFGAN, LARA, MODELS
from recbole_ext.cold_start import require_full_ranking

#: the protocol's config keys, declared once
HELDOUT_USER_SETTINGS = tuple(setting(h) for h in (
    flag("heldout_user_split", False, "true: hold out whole users (strong generalisation) instead of RecBole's "
                                      "eval_args split."),
    number("heldout_user_valid_ratio", 0.1, "share of the users held out to validate (seeded by seed).",
           low_open=True, high=1.0, high_open=True),
    number("heldout_user_test_ratio", 0.1, "share of the users held out to test (seeded by seed).",
           low_open=True, high=1.0, high_open=True),
    number("heldout_foldin_ratio", 0.8, "share of each held-out user's interactions the model reads (the "
                                        "fold-in; at random, or the earliest with eval_args.order: TO); the "
                                        "rest are the targets.", low_open=True, high=1.0, high_open=True),
))

#: RecBole's own models that score from the interaction history, and what the protocol tells them
RECBOLE_MODELS = ("Pop", "EASE", "ItemKNN", "MultiVAE", "MultiDAE")

_WHAT_TO_USE = (f"under heldout_user_split use a model that scores a user from their interactions: "
                f"{', '.join(m for m in MODELS if m != 'LARA')} (CFGAN with mode: user), or RecBole's "
                f"{', '.join(RECBOLE_MODELS)}; or remove heldout_user_split")


def heldout_user_settings(config) -> tuple[float, float, float] | None:
    """``(valid_ratio, test_ratio, foldin_ratio)`` when ``heldout_user_split`` is on, else ``None``;
    raises :class:`ConfigError` for an invalid setting or a model that cannot score an unseen user
    (before any data loads when called while RecBole builds its ``Config``)."""
    switch, valid, test, foldin = (h.default if config[h.name] is None else h.check(config[h.name])
                                   for h in HELDOUT_USER_SETTINGS)
    if not switch:
        return None
    if valid + test >= 1.0:
        raise ConfigError(f"heldout_user_valid_ratio={valid} and heldout_user_test_ratio={test} leave no training "
                          "users (they must sum to less than 1); lower them.")
    name = config["model"]
    cls = MODELS.get(name)
    if cls is not None:
        _check_genrec_model(cls, config)
    else:
        _check_recbole_model(name, config)
    require_full_ranking(config, "the held-out user protocol ranks every item for each held-out user")
    if config["cold_item_split"]:
        raise ConfigError("heldout_user_split and cold_item_split both define the split (held-out users vs held-out "
                          "items); use one of them.")
    if config["benchmark_filename"]:
        raise ConfigError("heldout_user_split and benchmark_filename both define the split; use one of them.")
    if config["save_dataloaders"]:
        raise ConfigError("heldout_user_split with save_dataloaders: RecBole would reuse saved loaders without "
                          "checking the held-out user settings; set save_dataloaders: false.")
    return valid, test, foldin


def _check_genrec_model(cls, config) -> None:
    name = config["model"]
    if cls.sequential and config["MODEL_TYPE"] == ModelType.SEQUENTIAL:   # block form only (config._sequential_rules)
        raise ConfigError(f"the held-out user protocol (heldout_user_split) reads {name} in block form (RecBole's "
                          f"general dataset), but the config selects its next-item form; {_WHAT_TO_USE}.")
    if issubclass(cls, LARA):
        raise ConfigError(f"LARA generates users for new items; it cannot score an unseen user, so the held-out user "
                          f"protocol (heldout_user_split) does not apply. Use the cold-start item protocol "
                          f"(cold_item_split) with LARA, or {_WHAT_TO_USE}.")
    if config["item_metrics"]:
        raise ConfigError(f"item_metrics: {name} would rank every user for each item, but under heldout_user_split "
                          "the held-out users are scored from their fold-in and the training users have no targets, "
                          "so item -> users metrics would mean nothing. Set item_metrics: false.")
    if issubclass(cls, CFGAN) and config["mode"] == "item":
        raise ConfigError("CFGAN mode 'item' learns one output per training user, so it cannot score a held-out user "
                          "(heldout_user_split). Set mode: user (it scores from the user's row, i.e. the fold-in).")
    if config["test_input"] == "train_valid":
        raise ConfigError("test_input: train_valid reads test users' validation rows, but under heldout_user_split "
                          "test users have none (they read their fold-in); set test_input: train.")


def _check_recbole_model(name, config) -> None:
    model_type = config["MODEL_TYPE"]
    if model_type not in (ModelType.GENERAL, ModelType.TRADITIONAL):
        raise ConfigError(f"the held-out user protocol (heldout_user_split) is for general models; {name} is a "
                          f"{model_type.name.lower()} model. {_WHAT_TO_USE[0].upper() + _WHAT_TO_USE[1:]}.")
    if name not in RECBOLE_MODELS:
        raise ConfigError(f"{name} cannot score users it was not trained on (it learns per-user parameters, or "
                          f"lightning-genrec does not fold users into it), so the held-out user protocol "
                          f"(heldout_user_split) cannot evaluate it. {_WHAT_TO_USE[0].upper() + _WHAT_TO_USE[1:]}.")
    if name == "ItemKNN" and config["knn_method"] == "user":
        raise ConfigError("ItemKNN with knn_method: user compares training users only; under heldout_user_split set "
                          "knn_method: item.")


def draw_heldout_users(user_ids: np.ndarray, valid_ratio: float, test_ratio: float, seed: int):
    """``(valid_users, test_users)``: disjoint, sorted, drawn from ``user_ids`` with ``seed``.
    Raises :class:`ConfigError` if a part (validation, test, training) would be empty."""
    user_ids = np.unique(np.asarray(user_ids, dtype=np.int64))
    n = len(user_ids)
    n_valid, n_test = int(round(valid_ratio * n)), int(round(test_ratio * n))
    if n_valid < 1 or n_test < 1 or n - n_valid - n_test < 1:
        raise ConfigError(f"heldout_user_valid_ratio={valid_ratio} and heldout_user_test_ratio={test_ratio} of {n} "
                          f"users leave {n_valid} validation, {n_test} test and {n - n_valid - n_test} training users; "
                          "each part needs at least one. Change the ratios, or use a dataset with more users.")
    drawn = np.random.default_rng(seed).permutation(user_ids)
    return np.sort(drawn[:n_valid]), np.sort(drawn[n_valid:n_valid + n_test])


def n_targets(counts, foldin_ratio: float) -> np.ndarray:
    """Targets of a held-out user with ``counts`` interactions: ``floor((1 - foldin_ratio) * n)``."""
    return np.floor(np.round((1.0 - foldin_ratio) * np.asarray(counts), 9)).astype(np.int64)


def split_foldin(users: np.ndarray, order_key: np.ndarray, foldin_ratio: float) -> np.ndarray:
    """(N,) bool: which of the interactions (``users``, one entry each) are fold-in.

    Per user with n interactions, ``floor((1 - foldin_ratio) * n)`` are targets (as Liang et al.'s
    ``int(0.2 * n)``; so a user with fewer than ``1 / (1 - foldin_ratio)`` interactions has no target and is
    not evaluated): those with the largest ``order_key`` (a time, or a random number)."""
    users = np.asarray(users)
    order = np.lexsort((order_key, users))                     # by user, then key
    sorted_users = users[order]
    starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
    counts = np.diff(np.r_[starts, len(users)])
    rank = np.arange(len(users)) - np.repeat(starts, counts)   # 0-based position inside the user
    n_target = n_targets(counts, foldin_ratio)
    is_foldin = np.empty(len(users), dtype=bool)
    is_foldin[order] = rank < np.repeat(counts - n_target, counts)
    return is_foldin


def _heldout_build(self, settings):
    valid_ratio, test_ratio, foldin_ratio = settings
    self._change_feat_format()
    seed = self.config["seed"]
    users = self.inter_feat[self.uid_field].numpy()
    valid_users, test_users = draw_heldout_users(users, valid_ratio, test_ratio, seed)
    in_valid, in_test = np.isin(users, valid_users), np.isin(users, test_users)
    in_train = ~(in_valid | in_test)
    items = self.inter_feat[self.iid_field].numpy().astype(np.int64)
    # as Liang et al.: a held-out user's interactions with items no training user has are dropped
    known = np.isin(items, np.unique(items[in_train]))
    heldout_all = np.flatnonzero(~in_train)
    heldout = heldout_all[known[heldout_all]]
    time_field = self.time_field
    if (self.config["eval_args"] or {}).get("order") == "TO" and time_field and time_field in self.inter_feat:
        key = self.inter_feat[time_field].numpy()[heldout].astype(np.float64)   # float64 times: compat item 12
    else:   # one draw per held-out interaction, dropped ones too: the others' keys do not depend on the drop
        key = np.random.default_rng([int(seed), 1]).random(len(heldout_all))[known[heldout_all]]
    foldin = split_foldin(users[heldout], key, foldin_ratio)
    target = np.zeros(len(users), dtype=bool)
    target[heldout[~foldin]] = True
    # a repeated interaction whose item the fold-in already holds is no target: the model reads that item
    pair = users.astype(np.int64) * self.item_num + items
    target &= ~np.isin(pair, pair[heldout[foldin]])
    rows = [np.flatnonzero(in_train), np.flatnonzero(in_valid & target), np.flatnonzero(in_test & target)]
    _check_targets(users, rows, valid_users, test_users, foldin_ratio)
    parts = [self.copy(self.inter_feat[torch.from_numpy(r)]) for r in rows]
    foldin_feat = self.inter_feat[torch.from_numpy(heldout[foldin])]
    for part in parts:
        part.heldout_foldin = foldin_feat
        part.heldout_users = {"valid": valid_users, "test": test_users}
    logging.getLogger().info(
        f"held-out user split: {len(valid_users)} validation and {len(test_users)} test users held out "
        f"({len(rows[0])} training interactions; {int(foldin.sum())} fold-in, {int((~foldin).sum())} target "
        f"interactions; {int((~in_train & ~known).sum())} held-out interactions dropped: their items have no "
        "training interaction)")
    return parts


def _check_targets(users, rows, valid_users, test_users, foldin_ratio) -> None:
    """A held-out user with too few interactions has no target: it is left out of training and of the
    evaluation.  Warn when that happens; refuse when a phase would have no user to evaluate."""
    least = int(np.argmax(n_targets(np.arange(int(1.0 / (1.0 - foldin_ratio)) + 2), foldin_ratio) >= 1))
    for phase, drawn, r in (("validation", valid_users, rows[1]), ("test", test_users, rows[2])):
        evaluated = len(np.unique(users[r]))
        advice = (f"a held-out user needs at least {least} interactions (on items training users have; a target "
                  f"repeating a fold-in item does not count) for heldout_foldin_ratio={foldin_ratio} to leave it a "
                  "target; keep only users with enough "
                  f"(user_inter_num_interval: \"[{least},inf)\") or lower heldout_foldin_ratio.")
        if evaluated == 0:
            raise ConfigError(f"none of the {len(drawn)} {phase} users has a target to evaluate: {advice}")
        if evaluated < len(drawn):
            logging.getLogger().warning(f"{len(drawn) - evaluated} of the {len(drawn)} {phase} users have no target "
                                        f"and are not evaluated (nor trained on): {advice}")


def foldin_lists(foldin, uid_field: str, iid_field: str, n_users: int) -> np.ndarray:
    """``(n_users,)`` object array: each held-out user's fold-in items (int64 tensor), ``None`` elsewhere."""
    users, items = foldin[uid_field].numpy(), foldin[iid_field].numpy()
    order = np.argsort(users, kind="stable")
    users, items = users[order], items[order]
    out = np.array([None] * n_users)
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if len(users) else np.zeros(0, np.int64)
    for u, chunk in zip(users[starts], np.split(items, starts[1:])):
        out[u] = torch.from_numpy(np.ascontiguousarray(chunk, dtype=np.int64))
    return out


def add_foldin_to_histories(loader, dataset) -> None:
    """A full-ranking loader's held-out users: their fold-in is read, so it is excluded from ranking
    like a history."""
    foldin = getattr(dataset, "heldout_foldin", None)
    if foldin is None or loader.is_sequential:
        return
    lists = foldin_lists(foldin, loader.uid_field, loader.iid_field, dataset.user_num)
    for uid in loader.uid_list.numpy():
        if lists[uid] is not None:
            loader.uid2history_item[uid] = torch.cat([loader.uid2history_item[uid], lists[uid]])


def with_foldin(dataset):
    """A copy of the training ``dataset`` whose interactions also hold the held-out users' fold-in
    (what a model that scores from the history reads); ``dataset`` itself when there is none."""
    foldin = getattr(dataset, "heldout_foldin", None)
    if foldin is None:
        return dataset
    return dataset.copy(cat_interactions([dataset.inter_feat, foldin]))


def _fold_in_ease(model, dataset):
    model.interaction_matrix = with_foldin(dataset).inter_matrix(form="csr").astype(np.float32)


def _fold_in_itemknn(model, dataset):
    matrix = with_foldin(dataset).inter_matrix(form="csr").astype(np.float32)
    model.interaction_matrix = matrix
    model.pred_mat = matrix.dot(model.w).tolil()


def _fold_in_autoencoder(model, dataset):
    # an autoencoder learns later, in fit, from these same history rows: it keeps the training-only
    # rows to learn from (_training_rows) and scores from the rows with the fold-in
    model.genrec_training_history = (model.history_item_id, model.history_item_value)
    model.build_histroy_items(with_foldin(dataset))   # (sic: RecBole's name)


def _training_rows(calculate_loss):
    """``calculate_loss`` reading the training rows only: RecBole's training loader for MultiVAE and
    MultiDAE visits every user id, so with the fold-in rows in place they would train on the held-out
    users' fold-in, which the protocol withholds from training."""
    def wrapped(self, interaction):
        training = getattr(self, "genrec_training_history", None)
        if training is None:
            return calculate_loss(self, interaction)
        scoring = (self.history_item_id, self.history_item_value)
        self.history_item_id, self.history_item_value = training
        try:
            return calculate_loss(self, interaction)
        finally:
            self.history_item_id, self.history_item_value = scoring

    return wrapped


_FOLD_IN = {"EASE": _fold_in_ease, "ItemKNN": _fold_in_itemknn, "MultiVAE": _fold_in_autoencoder,
            "MultiDAE": _fold_in_autoencoder}


def fold_in_models(original, name):
    """After RecBole builds EASE / ItemKNN / MultiVAE / MultiDAE from the training dataset (their
    parameters learned from training users only), give them the held-out users' fold-in rows to
    score from (``__init__``); the autoencoders, which learn afterwards, keep learning from the
    training rows (``calculate_loss``)."""
    if name == "calculate_loss":
        return _training_rows(original)
    fold = _FOLD_IN[original.__qualname__.split(".")[0]]

    def __init__(self, config, dataset):
        original(self, config, dataset)
        if getattr(dataset, "heldout_foldin", None) is not None:
            fold(self, dataset)

    return __init__
