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

import inspect
import math

import numpy as np
import pytorch_lightning as pl
import torch

from lightning_genrec.annealing import SCHEDULES, kl_weight
from lightning_genrec.data import InteractionData
from lightning_genrec.errors import ConfigError
from lightning_genrec.hparams import (Hyperparameter, args_doc, choice, int_list, integer, number, resolve,
                                      sized_from_data)
from lightning_genrec.item_ranking import phase_item_metrics, phase_item_metrics_from_users, user_score_blocks
from lightning_genrec.metrics import TopKMetrics

# settings several models share, declared once (a model may take one with another default: ``with_default``)
N_ITEMS = sized_from_data("n_items", "number of item columns (RecBole's item_num, padding id included).")
TOPK = int_list("topk", [10, 20], "cut-offs K of the evaluation metrics.")
LEARNING_RATE = number("learning_rate", 1e-3, "Adam step size.", low_open=True)
WEIGHT_DECAY = number("weight_decay", 0.0, "Adam weight decay.")
ANNEALING = (
    number("anneal_cap", 0.2, "the largest KL weight beta."),
    integer("total_anneal_steps", 200000, "minibatches (of train_batch_size, summed over processes) for beta to "
                                          "reach anneal_cap (cyclical: the period).", low=0),
    choice("anneal_schedule", "linear", SCHEDULES, "how beta grows with the minibatches read."),
)


def signature_of(specs: tuple[Hyperparameter, ...]) -> inspect.Signature:
    """``(*, name=default, ...)``: the constructor signature the settings describe (what
    ``inspect.signature(Model)`` and ``help(Model)`` show)."""
    kinds = {"int": int, "float": float, "str": str, "bool": bool, "int list": list[int], "str list": list[str]}
    params = []
    for h in specs:
        annotation = kinds[h.kind] | None if h.from_data else kinds[h.kind]
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
        """Scores over all items for the batch's users, ``(B, I)``; higher is better."""
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

    The schedule's clock is the number of minibatches of ``train_batch_size`` examples read so far
    by all processes together: ``global_step`` (this process's optimizer steps, which Lightning
    keeps in every checkpoint) times the number of processes.  Under DDP every process reads an
    equal shard, so W processes read W minibatches a step, and beta reaches its cap after the same
    amount of data (the same fraction of an epoch) whatever W is."""

    def minibatches_seen(self) -> int:
        """Minibatches read so far by all processes together (the annealing clock)."""
        trainer = self._trainer
        world = trainer.world_size if trainer is not None else 1
        return self.global_step * world

    def kl_weight(self) -> float:
        h = self.hparams
        return kl_weight(h.anneal_schedule, self.minibatches_seen(), h.anneal_cap, h.total_anneal_steps)

    def log_elbo(self, loss: torch.Tensor, nll: torch.Tensor, kl: torch.Tensor, beta: float, n: int) -> None:
        """Stop on a non-finite loss; log loss, NLL, KL and the KL weight (``n``: batch size)."""
        self.check_finite(loss)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=n)
        self.log_dict({"train/nll": nll, "train/kl": kl}, on_step=False, on_epoch=True, batch_size=n)
        self.log("train/kl_weight", beta, on_step=True, on_epoch=True, batch_size=n)
