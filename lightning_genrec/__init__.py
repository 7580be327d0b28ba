"""lightning-genrec: generative recommenders as LightningModules, on RecBole's data.

Importing this package applies the RecBole compatibility fixes
(``recbole_ext.compat``) and registers the models with RecBole.
"""
import recbole_ext  # noqa: F401  (compat fixes + RecBole registration, before recbole is used)
from lightning_genrec.comet import comet_logger
from lightning_genrec.data import InteractionTables, RecBoleDataModule
from lightning_genrec.metrics import TopKMetrics
from lightning_genrec.content import ContentTables
from lightning_genrec.models import CFGAN, CVAE, LARA, MODELS, MVAE, SVAE, GenRecModule, HyperparameterError
from lightning_genrec.sequences import SequenceTables

__version__ = "0.1.0"
__all__ = ["CFGAN", "CVAE", "ContentTables", "LARA", "MODELS", "MVAE", "SVAE", "GenRecModule", "HyperparameterError", "InteractionTables",
           "RecBoleDataModule", "SequenceTables", "TopKMetrics", "comet_logger"]
