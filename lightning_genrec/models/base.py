"""What every lightning-genrec model shares: full-ranking evaluation with
:class:`~lightning_genrec.metrics.TopKMetrics`, lazy sizing from the data,
hyperparameter checks and the non-finite-loss guard.

A model subclasses :class:`GenRecModule`, declares its settings once in
``HYPERPARAMETERS`` (:mod:`lightning_genrec.hparams`; the constructor's
signature, its checks and its docstring's ``Args`` follow from them), builds its
layers in ``build()`` (``self.hparams.n_items`` is known then) and implements
``score(batch) -> (B, I)``.  Nothing else is needed for it to validate, test,
log and run under RecBole's evaluator.
"""
from __future__ import annotations

import copy
import inspect
import math

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

from lightning_genrec.annealing import SCHEDULES, kl_weight
from lightning_genrec.data import InteractionData, SharedBatches
from lightning_genrec.errors import ConfigError
from lightning_genrec.hparams import (Hyperparameter, args_doc, choice, flag, int_list, integer, number, resolve,
                                      sized_from_data, with_default)
from lightning_genrec.item_ranking import phase_item_metrics, phase_item_metrics_from_users, user_score_blocks
from lightning_genrec.metrics import TopKMetrics

# settings several models share, declared once (a model may take one with another default: ``with_default``)
N_ITEMS = sized_from_data("n_items", "number of item columns (RecBole's item_num, padding id included).")
TOPK = int_list("topk", [10, 20], "cut-offs K of the evaluation metrics.")
LEARNING_RATE = number("learning_rate", 1e-3, "Adam step size.", low_open=True)
WEIGHT_DECAY = number("weight_decay", 0.0, "Adam weight decay.")
# the annealing settings, each declared once; a model takes those it has, with its authors' defaults
ANNEAL_CAP = number("anneal_cap", 0.2, "the largest KL weight beta (validation picks the epoch kept, so a run that "
                                       "reaches it has also tried every smaller beta on the way, as Liang et al. "
                                       "choose it).")
TOTAL_ANNEAL_STEPS = integer("total_anneal_steps", 200000, "minibatches (of train_batch_size, read by all processes "
                             "together) per unit of beta: beta = min(anneal_cap, minibatches / total_anneal_steps), "
                             "as Liang et al. (200000 in the paper; cyclical: the period). A model with "
                             "anneal_epochs: unset (~) means that horizon instead.", low=0)
ANNEAL_SCHEDULE = choice("anneal_schedule", "linear", SCHEDULES, "how beta grows with the data read.")
ANNEALING = (ANNEAL_CAP, TOTAL_ANNEAL_STEPS, ANNEAL_SCHEDULE)
#: the annealing settings with the horizon in passes over the training data (MVAE): one default serves
#: a 943-user and a 138,000-user data set; ``total_anneal_steps`` stays available (Liang et al.'s unit)
ANNEALING_BY_EPOCHS = (
    with_default(ANNEAL_CAP, 1.0),
    number("anneal_epochs", 200.0, "passes over the training users for beta to grow from 0 to anneal_cap "
                                   "(200: the epochs Liang et al. train; cyclical: the period); 0: anneal_cap "
                                   "at once.", low=0.0),
    with_default(TOTAL_ANNEAL_STEPS, None, optional=True),
    ANNEAL_SCHEDULE,
    flag("stop_after_anneal", True, "early stopping waits until a linear schedule's beta has reached anneal_cap "
                                    "(at most epochs): a run is not ended on a short plateau while beta still "
                                    "grows (how long a plateau may last: anneal_patience)."),
    integer("anneal_patience", 40, "with stop_after_anneal: how many of early stopping's requests in a row "
                                   "(validations without improvement past its own patience) are refused while "
                                   "beta still grows; then the run restarts from its best epoch (anneal_restarts) "
                                   "or the next request ends it (40: with stopping_step 10, a restart at "
                                   "the 50th validation without improvement, the stop at the 51st; chosen on "
                                   "validation curves, benchmarks/README.md). Unset (~): none is taken before "
                                   "the cap; 0: the first is taken, no restart before the cap.",
            low=0, optional=True),
    integer("anneal_restarts", 3, "with anneal_patience (or restart_after_cap): how many times a run whose "
                                  "patience ran out goes back to its best epoch's weights and Adam state with a "
                                  "smaller step (learning_rate x restart_lr_factor ** n at the n-th) and waits "
                                  "again (anneal_patience more requests; after the cap, early stopping's whole "
                                  "patience), before the stop is taken (beta keeps "
                                  "its clock; chosen on validation curves, benchmarks/README.md). 0: the stop is "
                                  "taken at once.", low=0),
    number("restart_lr_factor", 0.5, "with anneal_restarts: the step size's factor at each restart.",
           low=0.0, high=1.0, low_open=True),
    flag("restart_after_cap", True, "with stop_after_anneal, a linear schedule and anneal_restarts: after beta "
                                     "has reached anneal_cap, early stopping's request (its patience spent on a "
                                     "plateau) also restarts the run from its best epoch while restarts are left, "
                                     "and early stopping then waits its whole patience again; without it the "
                                     "request ends the run (chosen on validation curves, benchmarks/README.md)."),
)


def adam(params, lr: float, weight_decay: float = 0.0) -> torch.optim.Adam:
    """Adam, fused into one kernel where torch has one for the parameters' device (CPU and CUDA).

    The same update rule as the default (multi-tensor) Adam; the fused kernel reads and writes each
    parameter and its two moments once instead of once per elementwise operation, which at ML-20M
    size (the MVAE's 2 x 16 M weights) cuts the optimizer step from about 1/6 of a training step to
    about 1/40 on CPU.  Parameters elsewhere (or not floating point), and torch builds without the
    kernel (CPU before torch 2.4), get the default Adam."""
    params = list(params)
    if params and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params):
        try:
            return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
        except RuntimeError:                  # this torch has no fused kernel for these parameters
            pass
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def signature_of(specs: tuple[Hyperparameter, ...]) -> inspect.Signature:
    """``(*, name=default, ...)``: the constructor signature the settings describe (what
    ``inspect.signature(Model)`` and ``help(Model)`` show)."""
    kinds = {"int": int, "float": float, "str": str, "bool": bool, "int list": list[int], "str list": list[str]}
    params = []
    for h in specs:
        annotation = kinds[h.kind] | None if (h.from_data or h.optional) else kinds[h.kind]
        params.append(inspect.Parameter(h.name, inspect.Parameter.KEYWORD_ONLY, default=h.default,
                                        annotation=annotation))
    return inspect.Signature(params)


class GenRecModule(pl.LightningModule):
    """Base LightningModule for the generative recommenders.

    Class attributes a model may override:
        data_class: the data form it trains on (``InteractionData``: one row per user).
        sequential: ``True`` for models that read each user's interactions in time order
            (RecBole then builds its sequential dataset for leave-one-out splits).
    """

    data_class = InteractionData
    sequential = False
    #: also rank users for each item (``item_precision@K``, ``item_ndcg@K``, ``item_map@K`` from
    #: :mod:`lightning_genrec.item_ranking`) whenever a phase is evaluated; RecBole's config key
    #: ``item_metrics`` overrides it per run (LARA: on by default)
    item_metrics = False
    #: every setting of the model, in signature order (the one source of their defaults and ranges)
    HYPERPARAMETERS: tuple[Hyperparameter, ...] = (N_ITEMS, TOPK)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "HYPERPARAMETERS" in vars(cls):
            cls.__signature__ = signature_of(cls.HYPERPARAMETERS)
            cls.__doc__ = (inspect.cleandoc(cls.__doc__ or cls.__name__).rstrip() + "\n\n"
                           + args_doc(cls.HYPERPARAMETERS) + "\n")

    def __init__(self, **hparams):
        super().__init__()
        self.save_hyperparameters(self.resolve_hparams(hparams))
        self.val_metrics: TopKMetrics | None = None
        self.test_metrics: TopKMetrics | None = None
        self._data = None

    # -- to implement -------------------------------------------------------
    def build(self) -> None:
        """Create the layers; ``self.hparams.n_items`` is set."""
        raise NotImplementedError

    def score(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Scores over all items for the batch's users, ``(B, I)``; higher is better.  Each row
        must depend on its own user only (no statistics over the batch): evaluation scores users
        in blocks of its own size (:data:`~lightning_genrec.data.SCORE_BLOCK`), not RecBole's batches."""
        raise NotImplementedError

    @classmethod
    def resolve_hparams(cls, given: dict) -> dict:
        """All settings: ``given`` checked (an unknown name is an error), the rest at their defaults."""
        values = resolve(cls.HYPERPARAMETERS, given, cls.__name__)
        cls.check_together(values)
        return values

    @classmethod
    def check_hparams(cls, **given) -> None:
        """Validate settings without building the model (RecBole's entry point, before data loads)."""
        cls.resolve_hparams(given)

    @classmethod
    def check_together(cls, hparams: dict) -> None:
        """Constraints between settings (a model overrides this; raise ``HyperparameterError``)."""

    # -- data ----------------------------------------------------------------
    @property
    def is_built(self) -> bool:
        return self.hparams.get("n_items") is not None and any(True for _ in self.parameters())

    def attach_data(self, data) -> None:
        """Size the model from ``data`` (if not yet) and set up the metrics' item statistics."""
        n_items = self.hparams.get("n_items")
        if n_items is None:
            self.hparams.n_items = data.n_items
            self.build()
        elif n_items != data.n_items:
            raise ValueError(f"{type(self).__name__} was built for {n_items} items but the data has "
                             f"{data.n_items}; build the model for this dataset (n_items=None sizes it).")
        self._data = data
        counts = torch.as_tensor(data.item_counts)
        topk = list(self.hparams.topk)
        if max(topk) > data.n_items - 1:
            raise ConfigError(f"topk={topk}: the largest K ({max(topk)}) exceeds the {data.n_items - 1} items of the "
                              "data; use smaller cut-offs (and a valid_metric at one of them).")
        self.val_metrics = TopKMetrics(data.n_items, topk, counts, data.n_train_users)
        self.test_metrics = TopKMetrics(data.n_items, topk, counts, data.n_train_users)

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        data = getattr(dm, "data", None)
        if data is not None:
            self.attach_data(data)
        if not self.is_built:
            raise RuntimeError(f"{type(self).__name__} does not know the number of items: pass n_items=... "
                               "or train with a RecBoleDataModule.")
        if stage in ("validate", "test") and self.val_metrics is None:
            raise RuntimeError("evaluation needs the training statistics: use a RecBoleDataModule or call "
                               "model.attach_data(data) first.")

    # -- training helpers ------------------------------------------------------
    def check_finite(self, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss).all():
            raise FloatingPointError(
                f"{type(self).__name__}: the training loss became {loss.item()} at step "
                f"{self.global_step} (epoch {self.current_epoch}); training stopped. Try a smaller "
                "learning_rate, or check the input data for NaN/inf.")

    def configure_optimizers(self):
        return adam(self.parameters(), lr=self.hparams.learning_rate,
                    weight_decay=self.hparams.get("weight_decay", 0.0))

    # -- evaluation ------------------------------------------------------------
    def ranking_scores(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``score`` with the excluded history and the padding id at ``-inf``."""
        scores = self.score(batch).float()                                   # (B, I)
        if "exclude" in batch:
            scores = scores.masked_fill(batch["exclude"], -math.inf)
        scores[:, 0] = -math.inf
        return scores

    def validation_step(self, batch, batch_idx):
        self.val_metrics.update(self.ranking_scores(batch), batch["target"])

    def test_step(self, batch, batch_idx):
        self.test_metrics.update(self.ranking_scores(batch), batch["target"])

    def _device_score(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.score({k: v.to(self.device) for k, v in batch.items()})

    def item_user_scores(self, items: np.ndarray, phase: str) -> torch.Tensor:
        """(C, U) scores of every user for each of ``items``, users as the model scores them in
        ``phase``.  A model that scores items -> users directly overrides this (LARA); the item ->
        users metrics then ask it for chunks of items.  Otherwise they stream the user -> item
        scores, each user once; this default scores every user at each call, its ``items`` columns
        transposed (keep ``items`` few)."""
        blocks = user_score_blocks(self._device_score, self._data, phase, items)
        scores = torch.cat([s.float().cpu() for _, s in blocks]).T                    # (C, U - 1)
        return torch.cat([torch.full((len(items), 1), -torch.inf), scores], dim=1)  # user 0: padding

    @torch.no_grad()
    def item_results(self, phase: str) -> dict[str, float]:
        """Item -> users metrics of ``phase`` (see :mod:`lightning_genrec.item_ranking`)."""
        if self.sequential:
            raise RuntimeError(f"{type(self).__name__} scores the next item of a sequence; item -> users metrics "
                               "are for general models (set item_metrics: false).")
        if self._data is None:
            raise RuntimeError("item -> users metrics need the evaluation data: use a RecBoleDataModule or call "
                               "model.attach_data(data) first.")
        if type(self).item_user_scores is GenRecModule.item_user_scores:   # a user -> item model
            return phase_item_metrics_from_users(self._data, phase, self._device_score, self.hparams.topk)
        return phase_item_metrics(self._data, phase, lambda items: self.item_user_scores(items, phase),
                                  self.hparams.topk)

    def _log_metrics(self, metrics: TopKMetrics, prefix: str) -> None:
        values = {k: v.float() for k, v in metrics.compute().items()}
        if self.item_metrics:
            values.update({k: torch.tensor(v, device=self.device) for k, v in self.item_results(prefix).items()})
        self.log_dict({f"{prefix}/{k}": v for k, v in values.items()}, sync_dist=True)
        metrics.reset()

    def on_validation_epoch_end(self):
        self._log_metrics(self.val_metrics, "valid")

    def on_test_epoch_end(self):
        self._log_metrics(self.test_metrics, "test")


class VAEModule(GenRecModule):
    """What the VAEs share: the KL weight from the annealing schedule and the per-step ELBO logging.

    The schedule has one of two clocks:

    * passes over the training data (``anneal_epochs``, when the model declares it and
      ``total_anneal_steps`` is not set): ``current_epoch`` plus the share of this epoch's
      minibatches already read, so beta after a pass is the same for 943 users and for 138,000,
      and for any number of processes (each reads its equal share of every epoch);
    * minibatches of ``train_batch_size`` examples read so far by all processes together
      (``total_anneal_steps``, Liang et al.'s unit): ``global_step`` (this process's optimizer
      steps, which Lightning keeps in every checkpoint) times the minibatches a step reads
      (:meth:`minibatches_per_step`: the number of processes under Lightning's DDP, one where they
      share each batch), so beta reaches its cap after the same amount of data whatever the
      number of processes.

    With ``stop_after_anneal`` (MVAE's default) and a linear schedule, early stopping does not end
    training before beta has reached ``anneal_cap``: the fit loop's ``min_epochs`` is raised to
    that epoch (at most ``max_epochs``).  The paper anneals and keeps the epoch where validation
    peaks; a plateau while beta still grows is not the end of that curve.  A long one is: after
    ``anneal_patience`` requests in a row the stop is taken (any request to stop counts, e.g.
    ``EarlyStopping``'s threshold or a ``Timer``, as each was withdrawn before the cap).

    Before that stop, ``anneal_restarts`` times, the run goes back to its best epoch (weights and
    Adam state) with the step size times ``restart_lr_factor`` and the count starts again (early
    stopping, its own patience spent, asks at every validation, so the next restart or the stop
    comes ``anneal_patience`` validations later unless validation improves): a run that peaked
    early (validation falling while beta grows) gets another try with smaller steps instead of an
    end.  The best epoch comes from the stopping rule's keeper: the RecBole entry point's (it keeps
    the best weights and Adam state in memory), or in a Lightning script a ``ModelCheckpoint`` with
    a ``monitor`` (its best file, as that callback tracks it); with neither, the stop is taken as
    without restarts.  With several processes all restart or none does.

    With ``restart_after_cap`` the restarts left also answer requests after beta's cap: a request
    made at an epoch's end is held back to the next epoch's start (``min_epochs``), where, if it is a
    plateau's (the RecBole entry point's rule or Lightning's ``EarlyStopping`` with its patience
    spent; agreed by any process), the run restarts and each such rule waits its whole patience
    again; any other request (a ``Timer``, say), or one no best epoch can answer, ends the run at the
    end of the epoch after the one it was made in.  Nothing is held without a plateau rule or without
    anything that keeps a best epoch.  A held request is kept in checkpoints."""

    def minibatches_per_step(self) -> int:
        """Minibatches of ``train_batch_size`` one optimizer step reads: one per process, as Lightning's
        DDP batches (each process its own minibatch), or one in all when the processes share each
        batch (:class:`~lightning_genrec.data.SharedBatches`, RecBole's convention)."""
        trainer = self._trainer
        if trainer is None or trainer.world_size <= 1:
            return 1
        loader = getattr(trainer, "train_dataloader", None)
        return 1 if isinstance(getattr(loader, "batch_sampler", None), SharedBatches) else trainer.world_size

    def minibatches_seen(self) -> int:
        """Minibatches read so far by all processes together (the step clock)."""
        return self.global_step * self.minibatches_per_step()

    def epochs_seen(self) -> float:
        """Passes over the training data so far (the epoch clock): whole epochs plus the share of
        this epoch's minibatches read before the current one."""
        trainer = self._trainer
        if trainer is None:
            return 0.0
        batches = getattr(trainer, "num_training_batches", 0)
        if not batches or math.isinf(batches):
            return float(trainer.current_epoch)
        loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
        done = max(loop.batch_idx, 0) if loop is not None else 0       # this epoch's minibatches before this one
        return trainer.current_epoch + done / batches

    def _by_epochs(self) -> bool:
        return "anneal_epochs" in self.hparams and self.hparams.get("total_anneal_steps") is None

    def kl_weight(self) -> float:
        h = self.hparams
        if self._by_epochs():
            if h.anneal_schedule == "linear":   # min(cap, epochs / (horizon / cap)): cap after anneal_epochs
                per_unit = h.anneal_epochs / h.anneal_cap if h.anneal_cap > 0 else 0.0
                return kl_weight("linear", self.epochs_seen(), h.anneal_cap, per_unit)
            return kl_weight(h.anneal_schedule, self.epochs_seen(), h.anneal_cap, h.anneal_epochs)
        return kl_weight(h.anneal_schedule, self.minibatches_seen(), h.anneal_cap, h.total_anneal_steps)

    def anneal_end_epoch(self) -> float | None:
        """The pass over the data at which a linear schedule's beta reaches ``anneal_cap`` (needs the
        trainer's batches per epoch for the step clock); ``None`` for other schedules."""
        h = self.hparams
        if h.anneal_schedule != "linear":
            return None
        if self._by_epochs():
            return float(h.anneal_epochs)
        batches = getattr(self._trainer, "num_training_batches", 0) if self._trainer is not None else 0
        if not batches or math.isinf(batches):
            return None
        return h.anneal_cap * h.total_anneal_steps / (batches * self.minibatches_per_step())

    def on_train_start(self):
        if not self.hparams.get("stop_after_anneal"):
            return
        end = self.anneal_end_epoch()
        loop = self.trainer.fit_loop
        if end is not None and end > 0:
            wanted = math.ceil(end - 1e-9)
            if loop.max_epochs is not None and loop.max_epochs >= 0:
                wanted = min(wanted, loop.max_epochs)
            self._user_min_epochs = loop.min_epochs or 0
            loop.min_epochs = max(self._user_min_epochs, wanted)
        self._anneal_end = loop.min_epochs
        self._take_next_request()          # a run resumed with its refusals spent (mid-epoch: no epoch start)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit":              # a fresh fit; a resumed one then reads its count from the checkpoint
            self._refused, self._validated, self._user_min_epochs, self._restarts = 0, False, 0, 0
            self._restart_pending = self._no_restart_source = False

    def _before_anneal_end(self) -> bool:
        end = getattr(self, "_anneal_end", None) or self.trainer.fit_loop.min_epochs
        return bool(self.hparams.get("stop_after_anneal") and end and self.current_epoch < end)

    def _take_next_request(self) -> None:
        """``min_epochs`` down to this epoch once ``anneal_patience`` requests were refused in a row (a
        request at its end is taken; the user's own ``min_epochs`` still holds), else the anneal's end
        (or the next epoch, when a request at the anneal's end may become a restart)."""
        if not getattr(self, "_anneal_end", None):
            return
        patience = self.hparams.get("anneal_patience")
        loop = self.trainer.fit_loop
        if patience is not None:
            if patience and getattr(self, "_refused", 0) >= patience and self._restart():
                self._refused = 0
            if getattr(self, "_refused", 0) >= patience:
                loop.min_epochs = max(getattr(self, "_user_min_epochs", 0), self.current_epoch + 1)
                return
        loop.min_epochs = self._anneal_end
        if self._may_restart_after_cap():
            loop.min_epochs = max(loop.min_epochs, self.current_epoch + 2)

    def _may_restart_after_cap(self) -> bool:
        """Whether a request after beta's cap is held back one epoch to become a restart (the same on
        every process: it reads settings and counts only)."""
        return bool(self.hparams.get("restart_after_cap") and self.keeps_restart_state
                    and getattr(self, "_restarts", 0) < self.hparams.anneal_restarts
                    and not getattr(self, "_no_restart_source", False) and self._plateau_rules()
                    and self._may_know_a_best_epoch())

    def _may_know_a_best_epoch(self) -> bool:
        """Whether a best epoch can be kept at all: a callback with ``restart_state()`` or a monitoring
        ``ModelCheckpoint`` (the same on every process; whether it knows one yet is asked at the restart)."""
        return any(hasattr(c, "restart_state") for c in self.trainer.callbacks) or \
            any(getattr(c, "monitor", None) for c in self.trainer.checkpoint_callbacks)

    def _plateau_rules(self) -> list:
        """The stopping rules whose requests can become restarts: callbacks with ``plateau_request()``
        (the RecBole entry point's) and Lightning's ``EarlyStopping``."""
        return [c for c in self.trainer.callbacks if hasattr(c, "plateau_request") or isinstance(c, EarlyStopping)]

    def _restart_after_cap(self) -> None:
        """After beta's cap, at an epoch's start: the request held back at the last epoch's end, if it is
        a plateau's (early stopping's patience spent), becomes a restart and early stopping's patience
        starts again; any other request (a ``Timer``, say), or one no restart can answer, ends the run at
        this epoch's end.  While restarts are left, a request at this epoch's end is held back too."""
        loop = self.trainer.fit_loop
        user_min = getattr(self, "_user_min_epochs", 0)
        requested = self.trainer.should_stop or getattr(self, "_restart_pending", False)
        self._restart_pending = False
        if requested and self._may_restart_after_cap() and self._plateau_requested_by_all() \
                and self._restart("after beta's cap, early stopping asked to stop"):
            self.trainer.should_stop = False
            self._reset_patience()
        elif requested:
            self.trainer.should_stop = True
            loop.min_epochs = max(user_min, self.current_epoch + 1)
            return
        if self._may_restart_after_cap():
            loop.min_epochs = max(user_min, self.current_epoch + 2)
        elif loop.min_epochs is not None and loop.min_epochs > self.current_epoch + 1:
            loop.min_epochs = max(user_min, self._anneal_end)

    def _plateau_requested_by_all(self) -> bool:
        """``_plateau_requested`` agreed by every process (any of them): a rule may watch a metric that is
        not synchronised, and all must restart or none."""
        plateau = self._plateau_requested()
        if self.trainer.world_size > 1:
            plateau = self.trainer.strategy.reduce_boolean_decision(plateau, all=False)
        return plateau

    def _plateau_requested(self) -> bool:
        """Whether a stopping rule is asking to stop because validation has not improved for its
        patience: a callback with ``plateau_request()`` (the RecBole entry point's) or Lightning's
        ``EarlyStopping`` with its patience spent."""
        for callback in self._plateau_rules():
            if callback.plateau_request() if hasattr(callback, "plateau_request") else \
                    callback.wait_count >= callback.patience:
                return True
        return False

    def _reset_patience(self) -> None:
        """Each stopping rule waits its whole patience again (after a restart from the best epoch)."""
        for callback in self._plateau_rules():
            if hasattr(callback, "reset_patience"):
                callback.reset_patience()
            else:
                callback.wait_count = 0

    @property
    def keeps_restart_state(self) -> bool:
        """Whether the stopping rule's keeper should keep the best epoch's optimizer state too."""
        h = self.hparams
        return bool(h.get("stop_after_anneal") and h.get("anneal_schedule") == "linear" and h.get("anneal_restarts")
                    and (h.get("anneal_patience") or h.get("restart_after_cap")))

    def _restart(self, why: str | None = None) -> bool:
        """Back to the best epoch's weights and Adam state with a smaller step, if a restart is left and
        a best epoch is known (True), else False (and, with no best epoch known, no restart is tried
        after beta's cap)."""
        done = getattr(self, "_restarts", 0)
        if not self.keeps_restart_state or done >= self.hparams.anneal_restarts:
            return False
        best = self._best_to_restart_from()
        found = best is not None
        if self.trainer.world_size > 1:     # all processes restart or none (a best file one of them cannot read)
            found = self.trainer.strategy.reduce_boolean_decision(found, all=True)
        if not found:
            self._no_restart_source = True
            return False
        weights, optimizer_states, epoch = best
        self.load_state_dict(weights)
        optimizers = self.trainer.optimizers
        for optimizer, state in zip(optimizers, optimizer_states or []):
            optimizer.load_state_dict(copy.deepcopy(state))   # it keeps the tensors given: the kept best would move
        self._restarts = done + 1
        lr = self.hparams.learning_rate * self.hparams.restart_lr_factor ** self._restarts
        for optimizer in optimizers:
            for group in optimizer.param_groups:
                group["lr"] = lr
        why = why or f"validation has not improved for {self.hparams.anneal_patience} of early stopping's requests"
        rank_zero_info(f"{type(self).__name__}: {why}; restart {self._restarts} of {self.hparams.anneal_restarts} "
                       f"from epoch {epoch}'s weights, learning rate {lr:g}")
        return True

    def _best_to_restart_from(self):
        """(weights, optimizer states, epoch) of the best epoch: from a callback that keeps it
        (``restart_state()``, the RecBole entry point's), else from a monitoring ``ModelCheckpoint``'s
        best file; ``None`` when neither knows one."""
        for callback in self.trainer.callbacks:
            if hasattr(callback, "restart_state"):
                best = callback.restart_state()
                if best is not None:
                    return best
        for checkpoint in self.trainer.checkpoint_callbacks:
            path = getattr(checkpoint, "best_model_path", "") if getattr(checkpoint, "monitor", None) else ""
            if not path:
                continue
            try:
                saved = self.trainer.strategy.load_checkpoint(path, weights_only=False)   # this run's own file
            except (FileNotFoundError, OSError):
                continue
            if "optimizer_states" not in saved:
                rank_zero_warn(f"{path} holds no optimizer state (save_weights_only): a restart from it keeps the "
                               "current Adam state")
            return saved["state_dict"], saved.get("optimizer_states"), saved.get("epoch")
        return None

    def on_save_checkpoint(self, checkpoint):
        super().on_save_checkpoint(checkpoint)
        # a request made at this epoch's end is refused at the next epoch's start, which a resumed run
        # does not see (``should_stop`` is not saved): count it here
        # (not a request at the anneal's last epoch, held for a restart after the cap: restart_pending)
        pending = bool(self._trainer is not None and self.trainer.should_stop and self._before_anneal_end()
                       and self.current_epoch + 1 < min(getattr(self, "_anneal_end", None) or math.inf,
                                                        self.trainer.fit_loop.min_epochs))
        checkpoint["anneal_refused"] = getattr(self, "_refused", 0) + pending
        checkpoint["anneal_restarts_done"] = getattr(self, "_restarts", 0)
        # after the cap, a request held back for a restart at the next epoch's start (the same reason)
        checkpoint["restart_pending"] = bool(self._trainer is not None and self.trainer.should_stop
                                             and getattr(self, "_anneal_end", None)
                                             and self.current_epoch + 1 >= self._anneal_end
                                             and self._may_restart_after_cap()
                                             and self.current_epoch + 1 < (self.trainer.fit_loop.min_epochs or 0))

    def on_load_checkpoint(self, checkpoint):
        super().on_load_checkpoint(checkpoint)
        self._refused = checkpoint.get("anneal_refused", 0)
        self._restarts = checkpoint.get("anneal_restarts_done", 0)
        self._restart_pending = checkpoint.get("restart_pending", False)

    def on_train_epoch_start(self):
        """Withdraw a stop asked for before the anneal's end.  Lightning keeps ``should_stop`` set
        until ``min_epochs`` and then stops, even when validation has improved since: a run whose
        patience ran out while beta still grew ended exactly at the anneal's end, on a curve still
        rising.  Early stopping asks again at every validation while its patience stays spent
        (RecBole's counter and Lightning's ``EarlyStopping`` both do), so the rule becomes the one
        ``stop_after_anneal`` promises: no stop before beta reaches its cap, then RecBole's.

        With ``anneal_patience`` N, the withdrawn requests are counted; a validation without one (an
        improvement) resets the count, an epoch without validation leaves it.  After N withdrawals in a
        row ``min_epochs`` comes down to this epoch, so a request at its end is taken; without one it
        goes back to the anneal's end.  Every process sees the same requests (the stopping rules decide
        on synchronised metrics), so all stop together; the count is kept in checkpoints."""
        validated, self._validated = getattr(self, "_validated", False), False
        if not self._before_anneal_end():
            if getattr(self, "_anneal_end", None) and self.hparams.get("restart_after_cap"):
                self._restart_after_cap()
            return
        if self.trainer.should_stop:
            self.trainer.should_stop = False
            self._refused = getattr(self, "_refused", 0) + 1
        elif validated:
            self._refused = 0
        self._take_next_request()

    def on_validation_epoch_end(self):
        super().on_validation_epoch_end()
        if not self.trainer.sanity_checking:
            self._validated = True

    def log_elbo(self, loss: torch.Tensor, nll: torch.Tensor, kl: torch.Tensor, beta: float, n: int) -> None:
        """Stop on a non-finite loss; log loss, NLL, KL and the KL weight (``n``: batch size)."""
        self.check_finite(loss)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=n)
        self.log_dict({"train/nll": nll, "train/kl": kl}, on_step=False, on_epoch=True, batch_size=n)
        self.log("train/kl_weight", beta, on_step=True, on_epoch=True, batch_size=n)
