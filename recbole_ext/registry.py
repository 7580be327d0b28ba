"""Makes RecBole find lightning-genrec models by name.

For each model in ``lightning_genrec.models.MODELS`` one generic adapter class
(a RecBole ``GeneralRecommender`` that holds the LightningModule) is placed
where ``recbole.utils.get_model`` looks -- a real module object
``recbole.model.general_recommender.<name>`` in ``sys.modules`` -- and the
generic bridge trainer is exposed as ``recbole.trainer.<Name>Trainer``, where
``get_trainer`` looks.  Patching ``get_model`` itself would not work: RecBole
binds it at import time.
"""
from __future__ import annotations

import importlib.machinery
import sys
import types

import recbole.trainer
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import InputType, ModelType

from lightning_genrec.models import MODELS, GenRecModule
from recbole_ext.config import data_options, hparams_from_config, is_genrec_model
from recbole_ext.trainer import LightningTrainer


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

    def calculate_loss(self, interaction):
        raise RuntimeError(f"{type(self).__name__} is trained by recbole_ext.trainer.LightningTrainer, which "
                           "RecBole selects for it automatically; RecBole's own Trainer cannot train it.")

    def full_sort_predict(self, interaction):
        batch = self.data.recbole_batch(interaction, self.USER_ID, self.eval_phase)
        batch = {k: v.to(self.device) for k, v in batch.items()}
        scores = self.module.score(batch)                               # (B, I)
        if "exclude" in batch:  # history the model excludes itself (RecBole's sequential loaders do not)
            scores = scores.masked_fill(batch["exclude"], float("-inf"))
        return scores.reshape(-1)                                       # (B * I,)

    def predict(self, interaction):
        # pointwise scores; RecBole's run_recbole calls it once to count FLOPs
        items = interaction[self.ITEM_ID].to(self.device)
        scores = self.full_sort_predict(interaction).view(len(items), -1)  # (B, I)
        return scores.gather(1, items.view(-1, 1)).view(-1)


_ADAPTERS: dict[str, type[GenRecAdapter]] = {}


def adapter_class(name: str) -> type[GenRecAdapter]:
    """The RecBole model class for ``name``."""
    return _ADAPTERS[name]


def register(name: str, lightning_class: type[GenRecModule]) -> type[GenRecAdapter]:
    """Make ``run_recbole(model=name)`` build ``lightning_class`` and train it with Lightning."""
    module_name = f"recbole.model.general_recommender.{name.lower()}"
    model_type = ModelType.SEQUENTIAL if lightning_class.sequential else ModelType.GENERAL
    adapter = type(name, (GenRecAdapter,), {"lightning_class": lightning_class, "__module__": module_name,
                                            "__doc__": lightning_class.__doc__, "type": model_type})
    module = types.ModuleType(module_name, f"lightning-genrec's {name}, registered for RecBole.")
    module.__spec__ = importlib.machinery.ModuleSpec(module_name, None)
    setattr(module, name, adapter)
    sys.modules[module_name] = module
    setattr(recbole.trainer, f"{name}Trainer", LightningTrainer)
    _ADAPTERS[name] = adapter
    return adapter


def register_all() -> None:
    for name, cls in MODELS.items():
        if name not in _ADAPTERS:
            register(name, cls)


__all__ = ["MODELS", "GenRecAdapter", "adapter_class", "hparams_from_config", "is_genrec_model", "register",
           "register_all"]
