"""The checked way into RecBole for lightning-genrec: :func:`make_config` / :func:`load_data` give a clear
error for an unknown model, a missing dataset or atomic file, or an invalid setting, before any data is
loaded; :func:`require_users` names an empty split.

What ``Config`` itself checks and reads for our models lives by job: :mod:`recbole_ext.model_files` (YAML
defaults), :mod:`recbole_ext.model_names`, :mod:`recbole_ext.model_settings` (settings -> arguments, their
checks), :mod:`recbole_ext.model_rules` (what a model needs of the data and split), and
:mod:`recbole_ext.config_keys` (unknown keys).
"""
from __future__ import annotations

import os

from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.utils import init_seed

from lightning_genrec.errors import ConfigError, DatasetNotFoundError, UnknownModelError  # noqa: F401 (re-exported)
from recbole_ext.cold_start import cold_item_settings
from recbole_ext.model_names import check_model
from recbole_ext.model_settings import _FOR_DATAMODULE


def check_dataset_files(config) -> None:
    """Raise :class:`DatasetNotFoundError` naming the missing folder or atomic files."""
    path, name = config["data_path"], config["dataset"]
    if not os.path.isdir(path):
        raise DatasetNotFoundError(
            f"dataset {name!r}: folder {os.path.abspath(path)} does not exist. Nothing is downloaded: put "
            f"RecBole atomic files ({name}.inter, optionally {name}.user / {name}.item) there, or set "
            "data_path to the folder that contains it ('ml-100k' needs no data_path).")
    needed = [f"{name}.inter"]
    load_col = config["load_col"] or {}
    for suffix in ("user", "item"):
        if suffix in load_col:
            needed.append(f"{name}.{suffix}")
    if config["benchmark_filename"]:
        needed = [f"{name}.{part}.inter" for part in config["benchmark_filename"]]
    missing = [f for f in needed if not os.path.isfile(os.path.join(path, f))]
    if missing:
        raise DatasetNotFoundError(
            f"dataset {name!r} in {os.path.abspath(path)} is missing {', '.join(missing)} "
            "(needed by load_col / benchmark_filename). Add the file(s), or drop the fields from load_col.")


def make_config(model, dataset, config_file_list=None, config_dict=None, for_datamodule=False) -> Config:
    """``recbole.config.Config`` with every check of this module applied.

    With ``for_datamodule`` (the DataModule): RecBole's ``Config`` may not reset
    ``CUDA_VISIBLE_DEVICES`` to its ``gpu_id`` (Lightning's Trainer picks devices),
    and ``valid_metric`` is not checked (the user's callbacks select epochs)."""
    check_model(model)
    for path in config_file_list or []:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"config file {path} not found")
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    token = _FOR_DATAMODULE.set(for_datamodule)
    try:   # our models' checks run inside Config (adapt_model_config), as for RecBole's own run_recbole
        config = Config(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)
    except ConfigError:
        raise
    except (ValueError, SyntaxError) as exc:   # RecBole's own checks (topk, duplicate command-line keys, ...)
        raise ConfigError(f"RecBole cannot use this configuration: {exc}") from None
    finally:
        _FOR_DATAMODULE.reset(token)
        if for_datamodule:
            if before is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = before
    check_dataset_files(config)
    cold_item_settings(config)   # raises on an invalid cold-start item protocol, before data loads
    return config


def validation_intended(config) -> bool:
    """Whether the split is meant to have a validation part (``RS`` with a validation share,
    ``LS: valid_and_test``, or the cold-start item / held-out user protocol)."""
    if config["cold_item_split"] or config["heldout_user_split"]:
        return True
    split = (config["eval_args"] or {}).get("split") or {}
    if "RS" in split:
        ratios = list(split["RS"])
        return len(ratios) == 3 and ratios[1] > 0
    return split.get("LS") != "test_only"


def require_users(eval_data, phase: str, config) -> None:
    """A clear error, naming the settings that shape the split, when RecBole left ``phase`` empty
    (validation only where the split is meant to have one)."""
    if phase == "valid" and not validation_intended(config):
        return
    if eval_data is not None and len(eval_data) == 0:
        settings = ", ".join(f"{key}={config[key]!r}" for key in ("eval_args", "user_inter_num_interval",
                                                                "item_inter_num_interval", "val_interval",
                                                                "cold_item_split", "heldout_user_split") if config[key] is not None)
        raise ConfigError(f"the {phase} split of {config['dataset']} is empty: after RecBole's filters and split no "
                          f"user has a {phase} interaction ({settings}). Each user needs enough interactions "
                          "for every part of the split: change eval_args.split, loosen the filters, or use a "
                          "data set with more interactions per user.")


def load_data(config):
    """RecBole's dataset and split for ``config``: ``(dataset, train, valid, test)``.

    Seeds exactly as ``run_recbole`` does, so both entry points see the same split."""
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    return (dataset, train, valid, test)
