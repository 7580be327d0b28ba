"""The models. ``MODELS`` maps each model's name to its LightningModule class."""
from lightning_genrec.errors import GANCollapseError, HyperparameterError
from lightning_genrec.models.base import GenRecModule
from lightning_genrec.models.cfgan import CFGAN
from lightning_genrec.models.cvae import CVAE
from lightning_genrec.models.lara import LARA
from lightning_genrec.models.mvae import MVAE
from lightning_genrec.models.svae import SVAE

MODELS: dict[str, type[GenRecModule]] = {"MVAE": MVAE, "SVAE": SVAE, "CVAE": CVAE, "CFGAN": CFGAN, "LARA": LARA}

__all__ = ["MODELS", "CFGAN", "CVAE", "GANCollapseError", "GenRecModule", "HyperparameterError", "LARA", "MVAE", "SVAE"]
