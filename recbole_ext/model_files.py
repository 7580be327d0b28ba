"""Where our models' YAML defaults live, and RecBole's ``Config`` reading them.

:func:`config_path` finds ``configs/<name>.yaml`` (shipped in the package as ``lightning_genrec.configs``);
:func:`load_model_defaults` makes RecBole's ``Config`` read ``configs/trainer.yaml`` and the model's file
where RecBole reads its own ``properties/model/<Model>.yaml`` (after ``overall.yaml``, before the dataset's
YAML and everything the user passes).
"""
from __future__ import annotations

import os
from importlib import resources

import recbole

from recbole_ext.model_settings import is_genrec_model


_RECBOLE_PROPERTIES = os.path.join(os.path.dirname(os.path.realpath(recbole.__file__)), "properties")


def packaged_file(relative: str) -> str | None:
    """Path of ``configs/<relative>`` (installed as ``lightning_genrec.configs`` or in a checkout), or None."""
    try:
        path = resources.files("lightning_genrec.configs").joinpath(*relative.split("/"))
        if path.is_file():
            return str(path)
    except ModuleNotFoundError:
        pass
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", relative)
    return path if os.path.isfile(path) else None


def config_path(name: str) -> str:
    """Path of ``configs/<name>.yaml`` (installed or in a checkout)."""
    filename = f"{name.lower()}.yaml"
    path = packaged_file(filename)
    if path is None:
        raise FileNotFoundError(f"no default config {filename} for model {name}")
    return path


def load_model_defaults(original, name):
    """``Config._load_internal_config_dict``: our models' YAML defaults, read where RecBole reads its
    own ``properties/model/<Model>.yaml`` (after ``overall.yaml``, before the dataset's YAML)."""

    def _load_internal_config_dict(self, model, model_class, dataset):
        original(self, model, model_class, dataset)
        if not is_genrec_model(model_class):
            return
        self._update_internal_config_dict(config_path("trainer"))   # what every model's training shares
        self._update_internal_config_dict(config_path(model))
        # RecBole's order is overall < model < dataset: re-apply the dataset file on top
        dataset_file = os.path.join(_RECBOLE_PROPERTIES, "dataset", dataset + ".yaml")
        if os.path.isfile(dataset_file):
            self._update_internal_config_dict(dataset_file)

    return _load_internal_config_dict
