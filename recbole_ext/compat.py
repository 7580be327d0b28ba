"""RecBole 1.2.1 on today's numpy / pandas / torch: the fixes that :mod:`recbole_ext.patches` lists.

Each function here named in that list returns the value one RecBole attribute is set to; nothing
here sets anything itself, except :func:`prepare`, which must run before ``recbole`` (or ``ray``)
is imported: numpy's removed names (items 2, 3, 8 of ``shared/RECBOLE_NOTES.md``, through the
list's mechanism), a refusal of a stack RecBole cannot run on (setuptools >= 81, pandas 3:
items 1, 4, 5), and the FutureWarnings pandas 2 prints about two calls in RecBole's dataset module.
``import recbole_ext`` does both (``import lightning_genrec`` alone imports no RecBole).

:func:`load_data_and_model` and :func:`read_recbole_checkpoint` read RecBole checkpoints as
trusted files (torch >= 2.6 reads weights-only by default and rejects them: item 6).
"""
from __future__ import annotations

import importlib.metadata
import os
import warnings

import numpy as np
import pandas as pd
import torch

from lightning_genrec.content import ContentData
from lightning_genrec.errors import CheckpointError, DatasetNotFoundError
from lightning_genrec.models import MODELS
from recbole_ext import patches
from recbole_ext.patches import MISSING


#: items 2, 3 and 8: names removed in numpy 1.24 / 2.0 that ray 2.6.3 and RecBole use
NUMPY_ALIASES = {
    "bool8": np.bool_,
    "float_": np.float64,
    "complex_": np.complex128,
    "unicode_": np.str_,
    "float": np.float64,      # what RecBole's Config.compatibility_settings sets
    "int": np.int_,
}


def numpy_alias(original, name):
    """A numpy name ray or RecBole uses, where numpy no longer has it."""
    return NUMPY_ALIASES[name] if original is MISSING else original


def check_environment() -> None:
    """Fail with an actionable message on a stack RecBole 1.2.1 cannot run on."""
    import importlib.util

    if importlib.util.find_spec("pkg_resources") is None:
        raise ImportError(
            "pkg_resources is missing (setuptools >= 81 removed it), but recbole's quick start imports "
            "ray 2.6.3, which needs it. Install setuptools<81: pip install 'setuptools<81'.")
    pandas_version = importlib.metadata.version("pandas")
    if int(pandas_version.split(".")[0]) >= 3:
        raise ImportError(
            f"pandas {pandas_version} is installed, but RecBole 1.2.1 mis-loads "
            "token_seq fields (e.g. ml-100k genres) and leaves NaNs unfilled under "
            "pandas 3. Install pandas<3: pip install 'pandas<3'."
        )


class _TrustedTorch:
    """``torch`` as seen by RecBole's trainer / quick start: identical, except that
    ``load`` reads RecBole's own pickled checkpoints (they hold its ``Config`` and
    are written with pickle protocol 4, which torch's weights-only reader cannot
    parse at all, so allow-listing globals is not enough).  Only RecBole's trainer
    module sees it (``load_data_and_model`` is replaced instead); torch itself keeps
    its safe default everywhere else."""

    def __init__(self, torch_module):
        self._torch = torch_module

    def __getattr__(self, name):
        return getattr(self._torch, name)

    def load(self, f, map_location=None, **kwargs):
        return trusted_torch_load(f, map_location=map_location)


def trusted_torch_load(path, map_location=None):
    """Load a RecBole-format checkpoint written by RecBole or by this package.

    Like RecBole <= torch 2.5 did, this unpickles the file: only load files you trust.
    """
    import torch

    return torch.load(path, map_location=map_location, weights_only=False)


def trusted_torch(original, name):
    """``torch`` as RecBole's trainer module sees it (item 6)."""
    return original if isinstance(original, _TrustedTorch) else _TrustedTorch(original)


_WHAT_TO_PASS = "pass the saved/<Model>-<date>.pth file that run_recbole wrote (its result's saved_model_file)"


def read_recbole_checkpoint(model_file) -> dict:
    """A RecBole checkpoint (a dict with its ``config`` and ``state_dict``), or one
    :class:`~lightning_genrec.errors.CheckpointError` line saying what the file is instead."""
    import pickle
    import zipfile

    if not os.path.isfile(model_file):
        raise FileNotFoundError(f"checkpoint {model_file} not found: {_WHAT_TO_PASS}.")
    if os.path.getsize(model_file) == 0:
        raise CheckpointError(f"{model_file} is empty (0 bytes), not a RecBole checkpoint: {_WHAT_TO_PASS}.")
    try:
        checkpoint = trusted_torch_load(model_file, map_location="cpu")
    except (pickle.UnpicklingError, EOFError, RuntimeError, zipfile.BadZipFile, ValueError, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{model_file} cannot be read as a torch checkpoint (truncated, or not one: "
                              f"{reason}): {_WHAT_TO_PASS}.") from None
    if isinstance(checkpoint, dict) and "config" in checkpoint and "state_dict" in checkpoint:
        return checkpoint
    if isinstance(checkpoint, dict) and ("pytorch-lightning_version" in checkpoint or "hyper_parameters" in checkpoint):
        raise CheckpointError(f"{model_file} is a Lightning checkpoint, not RecBole's: load it with "
                              f"<Model>.load_from_checkpoint({model_file!r}) (e.g. lightning_genrec.MVAE), or "
                              f"{_WHAT_TO_PASS}.")
    raise CheckpointError(f"{model_file} holds a {type(checkpoint).__name__} without RecBole's 'config' and "
                          f"'state_dict': {_WHAT_TO_PASS}.")


def load_data_and_model(model_file, config_updates=None):
    """RecBole's ``load_data_and_model``, reading the checkpoint as a trusted file
    (RecBole's own imports torch inside the function, out of reach of a patch), with one
    clear error for a file that is not a RecBole checkpoint.  ``config_updates``: settings of
    the saved config to replace before anything is built (``device``, ``state``)."""
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, init_logger, init_seed

    checkpoint = read_recbole_checkpoint(model_file)
    config = checkpoint["config"]
    for key, value in (config_updates or {}).items():
        config[key] = value
    _settings_of_older_checkpoints(config)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    model.load_state_dict(checkpoint["state_dict"])
    model.load_other_parameter(checkpoint.get("other_parameter"))
    return config, model, dataset, train_data, valid_data, test_data


def _settings_of_older_checkpoints(config) -> None:
    """Data settings added after a checkpoint was saved take the value that reproduces how it was
    trained: a CVAE saved before ``content_items`` existed learned from the items with training
    interactions only (``train``); the default now (``all``) would build other content columns."""
    data_class = getattr(MODELS.get(config["model"]), "data_class", None)
    if data_class is not None and issubclass(data_class, ContentData) and "content_items" not in config:
        config["content_items"] = "train"


def checked_load_data_and_model(original, name):
    return load_data_and_model


class _Batches(list):
    """Evaluation batches of one collected tensor, concatenated when read (item 10)."""


def _joined(data: dict, name: str):
    value = data[name]
    if isinstance(value, _Batches):
        import torch

        value = data[name] = torch.cat(value, dim=0)
    return value


def _update_tensor(self, name, value):
    data = self._data_dict
    value = value.clone().detach()
    if name not in data:
        data[name] = _Batches([value])
    elif isinstance(data[name], _Batches):
        data[name].append(value)
    elif isinstance(data[name], torch.Tensor):
        data[name] = _Batches([data[name], value])
    else:
        raise ValueError(f"{name} is not a tensor.")


def _getitem(self, name):
    return _joined(self._data_dict, name)


def _get_data_struct(self):
    import copy

    data = self.data_struct._data_dict
    for key in list(data):
        value = _joined(data, key)
        if isinstance(value, torch.Tensor):     # item 7: only tensors can (and need to) be moved
            data[key] = value.cpu()
    returned_struct = copy.deepcopy(self.data_struct)
    for key in ["rec.topk", "rec.meanrank", "rec.score", "rec.items", "data.label"]:
        if key in self.data_struct:
            del self.data_struct[key]
    return returned_struct


def collector_fix(original, name):
    """Items 7 and 10: the collector's ``get_data_struct`` and its ``DataStruct``'s tensor handling."""
    return {"get_data_struct": _get_data_struct, "update_tensor": _update_tensor, "__getitem__": _getitem}[name]


def _download(self):
    raise DatasetNotFoundError(
        f"Dataset [{self.dataset_name}] was not found: the folder "
        f"[{os.path.abspath(self.dataset_path)}] does not exist. lightning-genrec never "
        "downloads data. Put RecBole atomic files "
        f"({self.dataset_name}.inter, optionally .user / .item) in that folder, or set "
        "`data_path` to the folder that contains it. 'ml-100k' needs no data_path: "
        "the copy shipped inside the recbole wheel is used."
    )


def no_download(original, name):
    return _download


def float64_time(original, name):
    """Item 12: ``Dataset._change_feat_format`` keeping the time field's float64."""
    from recbole.utils import FeatureType

    def _change_feat_format(self):
        field, times = self.time_field, None
        if (isinstance(self.inter_feat, pd.DataFrame) and field in self.inter_feat
                and self.field2type.get(field) == FeatureType.FLOAT
                and self.inter_feat[field].dtype.kind == "f"):   # not a numerical_features [value, 1] pair
            times = self.inter_feat[field].to_numpy(dtype=np.float64, copy=True)
        original(self)
        if times is not None:
            self.inter_feat.interaction[field] = torch.from_numpy(times)

    return _change_feat_format


def data_path_for_ml100k(config) -> None:
    """RecBole reads ml-100k from the copy inside its wheel, whatever ``data_path`` says; keep that
    unless the user's ``data_path`` holds an ``ml-100k`` folder, which is then used."""
    user_path = config.external_config_dict.get("data_path")
    if config.dataset == "ml-100k" and user_path and os.path.isdir(os.path.join(user_path, "ml-100k")):
        config.final_config_dict["data_path"] = os.path.join(user_path, "ml-100k")


def _dok_update(self, data):
    self._dict.update(data)


def dok_update(original, name):
    """scipy's dok matrices lost ``_update`` (an unchecked ``dict.update``) in 1.13; RecBole's graph
    models build their adjacency matrices with it (RecBole #2034)."""
    return original if original is not MISSING else _dok_update


def _quiet_inplace_fillna() -> None:
    """Item 5 under pandas 2: RecBole's ``feat[field].fillna(..., inplace=True)`` still fills
    (pandas < 3), but warns once per float / token field of every ``.item`` / ``.user`` file it
    loads that it will stop doing so in pandas 3.  The pin makes the warning noise; silence
    exactly those warnings (and the one ``token_seq`` length count gives), from that module."""
    for message in ("A value is trying to be set on a copy",      # fillna(inplace=True), item 5
                    "using <built-in function len> in Series.agg"):  # token_seq lengths, item 4
        warnings.filterwarnings("ignore", message=message, category=FutureWarning,
                                module=r"recbole\.data\.dataset\.dataset")


def ensure_dir(dir_path) -> None:
    """RecBole's ``ensure_dir`` without its check-then-create race (item 9)."""
    os.makedirs(dir_path, exist_ok=True)


def ensure_dir_fix(original, name):
    return ensure_dir


def exhaustive_search(new_ids, domain, trials, seed, nbMaxSucessiveFailures=1000):
    """Item 11: a hyperopt ``algo`` that proposes, for each new trial id, a point of the (discrete)
    space no earlier trial had; ``[]`` once ``nbMaxSucessiveFailures`` draws in a row found only
    points already tried (the space is exhausted).  RecBole's own, drawing with the ``Generator``
    hyperopt's samplers expect."""
    from hyperopt import pyll
    from hyperopt.base import miscs_update_idxs_vals

    def key(vals):
        return frozenset((name, v[0] if len(v) else None) for name, v in vals.items())

    tried = {key(t["misc"]["vals"]) for t in trials.trials}
    rng = np.random.default_rng(seed)
    docs = []
    for new_id in new_ids:
        for _ in range(nbMaxSucessiveFailures + 1):
            idxs, vals = pyll.rec_eval(domain.s_idxs_vals, memo={domain.s_new_ids: [new_id], domain.s_rng: rng})
            if key(vals) not in tried:
                break
        else:
            return docs
        tried.add(key(vals))
        misc = dict(tid=new_id, cmd=domain.cmd, workdir=domain.workdir)
        miscs_update_idxs_vals([misc], idxs, vals)
        docs.extend(trials.new_trial_docs([new_id], [None], [domain.new_result()], [misc]))
    return docs


def exhaustive_search_fix(original, name):
    return exhaustive_search


def prepare() -> None:
    """What must hold before RecBole (or ray) is imported at all: numpy's old names, and a stack
    RecBole 1.2.1 can run on.  :mod:`recbole_ext.patches` installs the rest."""
    patches.install("numpy aliases")
    check_environment()
    _quiet_inplace_fillna()
    # item 1: setuptools < 81 is pinned for ray 2.6.3, which then warns at every import that it is deprecated
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated as an API", category=UserWarning,
                            module=r"ray\..*")
