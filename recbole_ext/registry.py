"""Makes RecBole find lightning-genrec models by name.

For each model in ``lightning_genrec.models.MODELS`` one generic adapter class
(a RecBole ``GeneralRecommender`` that holds the LightningModule) is placed
where ``recbole.utils.get_model`` looks -- a real module object
``recbole.model.general_recommender.<name>`` in ``sys.modules`` -- and the
generic bridge trainer is exposed as ``recbole.trainer.<Name>Trainer``, where
``get_trainer`` looks (:mod:`recbole_ext.patches` installs both, as :func:`registered`).
"""
from __future__ import annotations

import importlib.machinery
import types
from dataclasses import dataclass

import numpy as np
import torch
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import InputType, ModelType

from lightning_genrec.data import users_per_eval_batch
from lightning_genrec.models import MODELS, GenRecModule
from recbole_ext.model_settings import data_options, hparams_from_config, is_genrec_model
from recbole_ext.trainer import LightningTrainer


@dataclass
class _ScoringPlan:
    order: np.ndarray              # (N,) the users in the order the loader asks for them
    position: np.ndarray           # (n_users,) each user's place in ``order``; -1: not planned
    per_block: int                 # users a block scores
    first: int = 0                 # the current block: its first place in ``order``
    scores: torch.Tensor | None = None   # (users, I) the current block's scores
    served: int = 0                # places before this are handed out


class GenRecAdapter(GeneralRecommender):
    """A lightning-genrec model as a RecBole recommender.

    ``self.module`` is the LightningModule (the one and only implementation);
    this class only translates RecBole's ``Interaction`` batches into user rows.
    Training happens in :class:`recbole_ext.trainer.LightningTrainer`.
    """

    type = ModelType.GENERAL
    input_type = InputType.POINTWISE
    lightning_class: type[GenRecModule] = GenRecModule

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        data_class = self.lightning_class.data_class
        self.data = data_class.from_train_dataset(dataset, **data_options(data_class, config))
        self.module = self.lightning_class(n_items=self.n_items, **hparams_from_config(self.lightning_class, config))
        self.module.attach_data(self.data)
        if "item_metrics" in config and config["item_metrics"] is not None:
            self.module.item_metrics = bool(config["item_metrics"])
        self.eval_phase: str | None = None   # set by LightningTrainer: which split is being scored
        self._plan: _ScoringPlan | None = None  # set by LightningTrainer (plan_scoring): users scored in blocks

    def calculate_loss(self, interaction):
        raise RuntimeError(f"{type(self).__name__} is trained by recbole_ext.trainer.LightningTrainer, which "
                           "RecBole selects for it automatically; RecBole's own Trainer cannot train it.")

    def full_sort_predict(self, interaction):
        if self._plan is not None:
            scores = self._planned_scores(interaction[self.USER_ID].cpu().numpy())
            if scores is not None:
                return scores.reshape(-1)
        return self._scores(self.data.recbole_batch(interaction, self.USER_ID, self.eval_phase)).reshape(-1)

    def _scores(self, batch: dict) -> torch.Tensor:
        batch = {k: v.to(self.device) for k, v in batch.items()}
        scores = self.module.score(batch)                               # (B, I)
        if "exclude" in batch:  # history the model excludes itself (RecBole's sequential loaders do not)
            scores = scores.masked_fill(batch["exclude"], float("-inf"))
        return scores

    def plan_scoring(self, eval_data) -> None:
        """Score the users ``eval_data`` (a RecBole full-ranking loader) will ask for in blocks of
        about :data:`~lightning_genrec.data.SCORE_BLOCK` scores, in the loader's order; ``None`` ends
        the plan.  A block is a whole number of RecBole's batches, the Lightning loop's batch
        (:func:`~lightning_genrec.data.users_per_eval_batch`).

        RecBole's ``eval_batch_size`` counts scores, so at ML-20M's 26,744 items its batch of
        409,600 holds 15 users, and a product per batch would read the model's whole output
        layer (26,744 x 600 weights) for 15 rows.  Each user's scores are the same function of
        their own row either way; RecBole still collects, masks and ranks batch by batch."""
        self._plan = None
        users = getattr(eval_data, "uid_list", None)
        if eval_data is None or self.type != ModelType.GENERAL or not torch.is_tensor(users):
            return
        step = int(getattr(eval_data, "step", 1))          # users in one of RecBole's batches
        per_block = users_per_eval_batch(step * self.n_items, self.n_items)
        if per_block <= step:                               # RecBole's batches are that large already
            return
        order = users.cpu().numpy().astype(np.int64)
        sampler = getattr(eval_data, "sampler", None)      # several processes: this process's share, in order
        if sampler is not None:
            order = order[np.fromiter(iter(sampler), dtype=np.int64, count=len(sampler))]
        position = np.full(self.n_users, -1, dtype=np.int64)
        position[order] = np.arange(len(order))            # a user listed twice (padding): the last place
        self._plan = _ScoringPlan(order, position, per_block)

    def _planned_scores(self, users: np.ndarray) -> torch.Tensor | None:
        """The planned block's rows for ``users`` (computing the block they start), or ``None``
        when they are not the next stretch of the plan."""
        plan = self._plan
        start = int(plan.position[users[0]]) if len(users) and 0 <= users[0] < len(plan.position) else -1
        stop = start + len(users)
        if start < plan.served or not np.array_equal(plan.order[start:stop], users):
            return None
        if not plan.first <= start or stop > plan.first + (0 if plan.scores is None else len(plan.scores)):
            block = plan.order[start:start + max(plan.per_block, len(users))]
            plan.scores, plan.first = None, start           # ours freed first (RecBole may still hold its last batch)
            plan.scores = self._scores(self.data.user_batch(block, self.eval_phase))
        plan.served = stop                                  # rows are handed out once (RecBole masks them in place)
        return plan.scores[start - plan.first:stop - plan.first]

    def predict(self, interaction):
        # pointwise scores; RecBole's run_recbole calls it once to count FLOPs
        items = interaction[self.ITEM_ID].to(self.device)
        scores = self.full_sort_predict(interaction).view(len(items), -1)  # (B, I)
        return scores.gather(1, items.view(-1, 1)).view(-1)


_ADAPTERS: dict[str, type[GenRecAdapter]] = {}


def adapter_class(name: str) -> type[GenRecAdapter]:
    """The RecBole model class for ``name``."""
    return _ADAPTERS[name]


def adapter_module(name: str, lightning_class: type[GenRecModule]) -> types.ModuleType:
    """The module ``recbole.model.general_recommender.<name>`` holding the RecBole class of
    ``lightning_class`` (what ``get_model(name)`` imports); made once per name."""
    if name not in _ADAPTERS:
        module_name = f"recbole.model.general_recommender.{name.lower()}"
        model_type = ModelType.SEQUENTIAL if lightning_class.sequential else ModelType.GENERAL
        _ADAPTERS[name] = type(name, (GenRecAdapter,), {"lightning_class": lightning_class, "__module__": module_name,
                                                        "__doc__": lightning_class.__doc__, "type": model_type})
    adapter = _ADAPTERS[name]
    module = types.ModuleType(adapter.__module__, f"lightning-genrec's {name}, registered for RecBole.")
    module.__spec__ = importlib.machinery.ModuleSpec(adapter.__module__, None)
    setattr(module, name, adapter)
    return module


def registered(original, name):
    """What RecBole's lookups find for our models: ``sys.modules[recbole.model.general_recommender.<model>]``
    (``get_model``) and ``recbole.trainer.<Model>Trainer`` (``get_trainer``: the bridge trainer)."""
    if name.endswith("Trainer"):
        return LightningTrainer
    module_name = name[len("modules["):-1]
    model = next(m for m in MODELS if module_name.endswith("." + m.lower()))
    return adapter_module(model, MODELS[model])


__all__ = ["MODELS", "GenRecAdapter", "adapter_class", "adapter_module", "hparams_from_config", "is_genrec_model",
           "registered"]
