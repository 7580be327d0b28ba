"""lightning-genrec: generative recommenders as LightningModules, on RecBole's data.

This package holds everything that does not need RecBole's ``Config``: the
exception types, metrics and annealing, the data forms, and the models.  It
imports nothing of ``recbole_ext``: RecBole's compatibility fixes and the
model registration happen when ``recbole_ext`` is imported, for example through
``from recbole_ext import RecBoleDataModule``.

Layers, bottom to top (a module imports only from its own layer or below;
``tests/test_layers.py`` checks it)::

    errors -> annealing, metrics, item_ranking, comet -> data, sequences, content
           -> models -> recbole_ext (config, registry, trainer, datamodule, ...)
"""
from lightning_genrec.comet import comet_logger
from lightning_genrec.content import ContentData
from lightning_genrec.data import InteractionData
from lightning_genrec.errors import (CheckpointError, ConfigError, DataFileError, DatasetNotFoundError, GANCollapseError,
                                     HyperparameterError, MissingContentError)
from lightning_genrec.metrics import TopKMetrics
from lightning_genrec.models import CFGAN, CVAE, LARA, MODELS, MVAE, SVAE, GenRecModule
from lightning_genrec.sequences import SequenceData

__version__ = "0.1.0"
__all__ = ["CFGAN", "CVAE", "CheckpointError", "ConfigError", "ContentData", "DataFileError", "DatasetNotFoundError", "GANCollapseError",
           "GenRecModule", "HyperparameterError", "InteractionData", "LARA", "MODELS", "MVAE",
           "MissingContentError", "SVAE", "SequenceData", "TopKMetrics", "comet_logger"]
