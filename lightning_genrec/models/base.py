"""What every lightning-genrec model shares: full-ranking evaluation with
:class:`~lightning_genrec.metrics.TopKMetrics`, lazy sizing from the data,
hyperparameter checks and the non-finite-loss guard.

A model subclasses :class:`GenRecModule`, calls ``save_hyperparameters()``,
builds its layers in ``build()`` (``self.hparams.n_items`` is known then) and
implements ``score(batch) -> (B, I)``.  Nothing else is needed for it to
validate, test, log and run under RecBole's evaluator.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import pytorch_lightning as pl
import torch

from lightning_genrec.annealing import SCHEDULES, kl_weight
from lightning_genrec.errors import HyperparameterError
from lightning_genrec.data import InteractionTables
from lightning_genrec.item_ranking import phase_item_metrics, scores_from_users
from lightning_genrec.metrics import TopKMetrics


def check_hparam(name: str, value: Any, ok: Callable[[Any], bool], allowed: str) -> None:
    """Raise :class:`HyperparameterError` naming ``name`` and ``allowed`` unless ``ok(value)``."""
    try:
        good = ok(value)
    except (TypeError, ValueError):
        good = False
    if not good:
        raise HyperparameterError(f"invalid hyperparameter {name}={value!r}: must be {allowed}")


def positive_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


# name -> (test, what is allowed); shared by every model that has the hyperparameter
COMMON_CHECKS = {
    "n_items": (lambda v: v is None or positive_int(v), "a positive integer or None"),
    "learning_rate": (lambda v: v > 0.0, "> 0"),
    "weight_decay": (lambda v: v >= 0.0, ">= 0"),
    "topk": (lambda v: len(v) > 0 and all(positive_int(k) for k in v), "a list of positive integers"),
}
ANNEAL_CHECKS = {
    "anneal_cap": (lambda v: v >= 0.0, ">= 0"),
    "total_anneal_steps": (lambda v: isinstance(v, int) and v >= 0, "an integer >= 0"),
    "anneal_schedule": (lambda v: v in SCHEDULES, f"one of {list(SCHEDULES)}"),
}


class GenRecModule(pl.LightningModule):
    """Base LightningModule for the generative recommenders.

    Class attributes a model may override:
        tables_class: the data form it trains on (``InteractionTables``: one row per user).
        sequential: ``True`` for models that read each user's interactions in time order
            (RecBole then builds its sequential dataset for leave-one-out splits).
    """

    tables_class = InteractionTables
    sequential = False
    #: also rank users for each item (``item_precision@K``, ``item_ndcg@K``, ``item_map@K`` from
    #: :mod:`lightning_genrec.item_ranking`) whenever a phase is evaluated; RecBole's config key
    #: ``item_metrics`` overrides it per run (LARA: on by default)
    item_metrics = False
    #: the model's own hyperparameter checks, on top of ``COMMON_CHECKS``: name -> (test, allowed)
    HPARAM_CHECKS: dict = {}

    def __init__(self):
        super().__init__()
        self.val_metrics: TopKMetrics | None = None
        self.test_metrics: TopKMetrics | None = None
        self._tables = None

    # -- to implement -------------------------------------------------------
    def build(self) -> None:
        """Create the layers; ``self.hparams.n_items`` is set."""
        raise NotImplementedError

    def score(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Scores over all items for the batch's users, ``(B, I)``; higher is better."""
        raise NotImplementedError

    @classmethod
    def check_hparams(cls, **hparams) -> None:
        """Validate hyperparameters (called by ``__init__`` and by the RecBole door before data loads)."""
        checks = {**COMMON_CHECKS, **cls.HPARAM_CHECKS}
        for name, value in hparams.items():
            if name in checks:
                check_hparam(name, value, *checks[name])

    # -- data ----------------------------------------------------------------
    @property
    def is_built(self) -> bool:
        return self.hparams.get("n_items") is not None and any(True for _ in self.parameters())

    def attach_data(self, tables) -> None:
        """Size the model from ``tables`` (if not yet) and set up the metrics' item statistics."""
        n_items = self.hparams.get("n_items")
        if n_items is None:
            self.hparams.n_items = tables.n_items
            self.build()
        elif n_items != tables.n_items:
            raise ValueError(f"{type(self).__name__} was built for {n_items} items but the data has "
                             f"{tables.n_items}; build the model for this dataset (n_items=None sizes it).")
        self._tables = tables
        counts = torch.as_tensor(tables.item_counts)
        topk = list(self.hparams.topk)
        self.val_metrics = TopKMetrics(tables.n_items, topk, counts, tables.n_train_users)
        self.test_metrics = TopKMetrics(tables.n_items, topk, counts, tables.n_train_users)

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        tables = getattr(dm, "tables", None)
        if tables is not None:
            self.attach_data(tables)
        if not self.is_built:
            raise RuntimeError(f"{type(self).__name__} does not know the number of items: pass n_items=... "
                               "or train with a RecBoleDataModule.")
        if stage in ("validate", "test") and self.val_metrics is None:
            raise RuntimeError("evaluation needs the training statistics: use a RecBoleDataModule or call "
                               "model.attach_data(tables) first.")

    # -- training helpers ------------------------------------------------------
    def check_finite(self, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss).all():
            raise FloatingPointError(
                f"{type(self).__name__}: the training loss became {loss.item()} at step "
                f"{self.global_step} (epoch {self.current_epoch}); training stopped. Try a smaller "
                "learning_rate, or check the input data for NaN/inf.")

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.learning_rate,
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

    def item_user_scores(self, items: np.ndarray, phase: str) -> torch.Tensor:
        """(C, U) scores of every user for each of ``items``, users as the model scores them in
        ``phase``.  Default: the user -> item scores of all users, transposed."""
        def score(batch):
            return self.score({k: v.to(self.device) for k, v in batch.items()})
        return scores_from_users(score, self._tables, phase)(items)

    @torch.no_grad()
    def item_results(self, phase: str) -> dict[str, float]:
        """Item -> users metrics of ``phase`` (see :mod:`lightning_genrec.item_ranking`)."""
        if self.sequential:
            raise RuntimeError(f"{type(self).__name__} scores the next item of a sequence; item -> users metrics "
                               "are for general models (set item_metrics: false).")
        if self._tables is None:
            raise RuntimeError("item -> users metrics need the evaluation data: use a RecBoleDataModule or call "
                               "model.attach_data(tables) first.")
        return phase_item_metrics(self._tables, phase, lambda items: self.item_user_scores(items, phase),
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
    """What the VAEs share: the KL weight from the annealing schedule (a pure function of
    ``global_step``, so it resumes from checkpoints) and the per-step ELBO logging."""

    def kl_weight(self) -> float:
        h = self.hparams
        return kl_weight(h.anneal_schedule, self.global_step, h.anneal_cap, h.total_anneal_steps)

    def log_elbo(self, loss: torch.Tensor, nll: torch.Tensor, kl: torch.Tensor, beta: float, n: int) -> None:
        """Stop on a non-finite loss; log loss, NLL, KL and the KL weight (``n``: batch size)."""
        self.check_finite(loss)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=n)
        self.log_dict({"train/nll": nll, "train/kl": kl}, on_step=False, on_epoch=True, batch_size=n)
        self.log("train/kl_weight", beta, on_step=True, on_epoch=True, batch_size=n)
