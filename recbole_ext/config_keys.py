"""Config keys nothing reads: a warning naming the closest known key (``laerning_rate``)."""
from __future__ import annotations

import difflib
import glob
import os
import re
import warnings

import yaml

import recbole

import lightning_genrec
from lightning_genrec.models import MODELS
from recbole_ext.cold_start import COLD_ITEM_SETTINGS
from recbole_ext.heldout_users import HELDOUT_USER_SETTINGS
from recbole_ext.model_files import _RECBOLE_PROPERTIES, config_path
from recbole_ext.model_settings import TRAINING_SETTINGS


_RECBOLE_KEYS: set[str] | None = None
_CONFIG_READ = re.compile(r"""config\[["']([A-Za-z_][A-Za-z0-9_]*)["']\]""")


def known_keys() -> set[str]:
    """Every config key RecBole, its models and data sets, or lightning-genrec read."""
    global _RECBOLE_KEYS
    if _RECBOLE_KEYS is None:
        keys = {"model", "dataset", "config_files", "nproc", "world_size", "offset", "ip", "port"}
        for path in glob.glob(os.path.join(_RECBOLE_PROPERTIES, "**", "*.yaml"), recursive=True):
            with open(path, encoding="utf-8") as f:
                keys.update((yaml.safe_load(f) or {}).keys())
        for path in glob.glob(os.path.join(os.path.dirname(config_path("trainer")), "**", "*.yaml"), recursive=True):
            with open(path, encoding="utf-8") as f:
                keys.update((yaml.safe_load(f) or {}).keys())
        for cls in MODELS.values():
            keys.update(h.name for h in (*cls.HYPERPARAMETERS, *cls.data_class.SETTINGS))
        keys.update(h.name for h in (*COLD_ITEM_SETTINGS, *HELDOUT_USER_SETTINGS, *TRAINING_SETTINGS))
        # keys read in code without a YAML default (RecBole's encoding, tail_ratio, ...; ours)
        for package in (os.path.dirname(recbole.__file__), os.path.dirname(os.path.abspath(__file__)),
                        os.path.dirname(os.path.abspath(lightning_genrec.__file__))):
            for path in glob.glob(os.path.join(package, "**", "*.py"), recursive=True):
                with open(path, encoding="utf-8") as f:
                    keys.update(_CONFIG_READ.findall(f.read()))
        _RECBOLE_KEYS = keys
    return _RECBOLE_KEYS


def warn_unknown_keys(config) -> None:
    """A warning for each key the user set (files, ``config_dict``, command line) that nothing reads."""
    given = {**(config.file_config_dict or {}), **(config.variable_config_dict or {}),
             **(config.cmd_config_dict or {})}
    known = known_keys()
    for key in sorted(k for k in given if k not in known):
        close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        warnings.warn(f"unknown config key {key!r}: neither RecBole nor {config['model']} reads it, so it has no "
                      f"effect{hint}", UserWarning, stacklevel=2)
