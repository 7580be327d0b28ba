"""RecBole 1.2.1 on today's numpy / pandas / torch.

Each fix is narrow, idempotent and keyed to an item of ``shared/RECBOLE_NOTES.md``;
``tests/test_compat.py`` has one test per item.  :func:`apply` must run before
``recbole`` (or ``ray``) is imported; ``import recbole_ext`` does it (``import
lightning_genrec`` alone imports no RecBole).

1. ``ray`` 2.6.3 needs ``pkg_resources`` -> the package pins ``setuptools<81``
   (nothing to patch at run time; :func:`check_environment` says so clearly).
2. ``ray.tune`` uses ``np.bool8``                      -> alias restored.
3. ``Config.compatibility_settings`` uses ``np.float_`` -> aliases restored.
4./5. pandas 3 breaks ``token_seq`` fields and ``fillna(inplace=True)``
   -> the package pins ``pandas<3``; :func:`check_environment` refuses pandas 3.
6. ``torch.load`` defaults to ``weights_only=True`` (torch >= 2.6); RecBole's
   checkpoints hold its ``Config`` and use pickle protocol 4, which the
   weights-only reader rejects whatever is allow-listed -> RecBole's trainer and
   quick start (only those modules) load with an explicit trusted flag.
7. ``Collector.get_data_struct`` calls ``.cpu()`` on ints and Counters
   (``ItemCoverage``, ``GiniIndex`` crash) -> only tensors are moved.
8. RecBole's ``MRR`` / ``MAP`` / ``NDCG`` use ``np.float``, which numpy >= 1.24
   lacks; RecBole's ``Config`` re-adds it when constructed, but a checkpoint
   loaded by ``load_data_and_model`` unpickles its ``Config`` without
   constructing one -> ``np.float`` / ``np.int`` aliases restored at import.
9. ``ensure_dir`` checks, then creates: processes started together (``nproc``)
   race to create ``./log`` or the checkpoint folder and one fails with
   ``FileExistsError`` -> created with ``exist_ok``.
10. ``DataStruct.update_tensor`` concatenates the whole collected tensor with each
   evaluation batch: quadratic in the number of batches (ML-1M shape, MVAE, one
   user a batch: a test evaluation took 14.4 s, 10.6 s with the fix; the copying
   grows with the square of the users) -> batches are kept in a list and
   concatenated once, when read.
11. ``HyperTuning``'s exhaustive search (``algo="exhaustive"``, RecBole's
   ``run_hyper`` default) hands hyperopt a ``numpy.random.RandomState``; hyperopt
   >= 0.2.7 draws with ``Generator.integers`` and the first trial fails with
   ``AttributeError`` -> :func:`exhaustive_search` draws with a ``Generator``.
12. (Not in the notes; RecBole issues #1653 and #2204.) ``_change_feat_format`` turns every
   float field into a float32 tensor, the time field too: a Unix time (1e9 s) then resolves
   to 64-128 s, so interactions that close together tie and RecBole's time-ordered sort
   (``order: TO``: leave-one-out, sequences, our held-out fold-in) keeps them in file order
   (raw ml-100k: 908 of 943 users' histories in another order; with its shipped
   ``normalize_all`` 83 users, 4 next-item test targets) -> the time field keeps its float64
   (not when ``numerical_features`` makes it RecBole's [value, 1] pairs; RecBole's own sequential
   models' ``timestamp_list`` doubles in size with it).

Two behaviours of RecBole that would hang or mislead a user on a machine
without network are also changed here: a missing dataset raises
:class:`DatasetNotFoundError` instead of trying to download it, and an
explicit ``data_path`` is honoured for ``ml-100k`` (RecBole silently replaces
it with the copy inside its wheel).
"""
from __future__ import annotations

import importlib.metadata
import os

import numpy as np
import pandas as pd
import torch

from lightning_genrec.content import ContentData
from lightning_genrec.errors import CheckpointError, DatasetNotFoundError
from lightning_genrec.models import MODELS

_APPLIED = False




def _numpy_aliases() -> None:
    # items 2, 3 and 8: names removed in numpy 1.24 / 2.0 that ray 2.6.3 and RecBole use
    for name, value in {
        "bool8": np.bool_,
        "float_": np.float64,
        "complex_": np.complex128,
        "unicode_": np.str_,
        "float": np.float64,      # what RecBole's Config.compatibility_settings sets
        "int": np.int_,
    }.items():
        if not hasattr(np, name):
            setattr(np, name, value)


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


def _patch_torch_load(module) -> None:
    import torch

    if not isinstance(getattr(module, "torch", None), _TrustedTorch):
        module.torch = _TrustedTorch(torch)


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


def _patch_quick_start(module) -> None:
    module.load_data_and_model = load_data_and_model


class _PatchOnImport:
    """Meta-path hook: patch ``recbole.quick_start.quick_start`` when (and only
    when) someone imports it, so that importing this package does not import ray."""

    target = "recbole.quick_start.quick_start"

    def find_spec(self, name, path=None, target=None):
        if name != self.target:
            return None
        import importlib.machinery

        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return None
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            _patch_quick_start(module)

        spec.loader.exec_module = exec_and_patch
        return spec


def _checkpoint_loading() -> None:
    # item 6
    import sys

    import recbole.trainer.trainer as trainer_module

    _patch_torch_load(trainer_module)
    if _PatchOnImport.target in sys.modules:
        _patch_quick_start(sys.modules[_PatchOnImport.target])
        sys.modules["recbole.quick_start"].load_data_and_model = load_data_and_model
    elif not any(isinstance(f, _PatchOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _PatchOnImport())


class _Batches(list):
    """Evaluation batches of one collected tensor, concatenated when read (item 10)."""


def _joined(data: dict, name: str):
    value = data[name]
    if isinstance(value, _Batches):
        import torch

        value = data[name] = torch.cat(value, dim=0)
    return value


def _collector_fix() -> None:
    # items 7 and 10
    import copy

    import torch
    from recbole.evaluator.collector import Collector, DataStruct

    if getattr(Collector.get_data_struct, "_genrec_fixed", False):
        return

    def update_tensor(self, name, value):
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

    def getitem(self, name):
        return _joined(self._data_dict, name)

    DataStruct.update_tensor = update_tensor
    DataStruct.__getitem__ = getitem

    def get_data_struct(self):
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

    get_data_struct._genrec_fixed = True
    Collector.get_data_struct = get_data_struct


def _no_download() -> None:
    from recbole.data.dataset import Dataset

    if getattr(Dataset._download, "_genrec_fixed", False):
        return

    def _download(self):
        raise DatasetNotFoundError(
            f"Dataset [{self.dataset_name}] was not found: the folder "
            f"[{os.path.abspath(self.dataset_path)}] does not exist. lightning-genrec never "
            "downloads data. Put RecBole atomic files "
            f"({self.dataset_name}.inter, optionally .user / .item) in that folder, or set "
            "`data_path` to the folder that contains it. 'ml-100k' needs no data_path: "
            "the copy shipped inside the recbole wheel is used."
        )

    _download._genrec_fixed = True
    Dataset._download = _download


def _float64_time() -> None:
    # item 12
    from recbole.data.dataset import Dataset
    from recbole.utils import FeatureType

    original = Dataset._change_feat_format
    if getattr(original, "_genrec_fixed", False):
        return

    def _change_feat_format(self):
        field, times = self.time_field, None
        if (isinstance(self.inter_feat, pd.DataFrame) and field in self.inter_feat
                and self.field2type.get(field) == FeatureType.FLOAT
                and self.inter_feat[field].dtype.kind == "f"):   # not a numerical_features [value, 1] pair
            times = self.inter_feat[field].to_numpy(dtype=np.float64, copy=True)
        original(self)
        if times is not None:
            self.inter_feat.interaction[field] = torch.from_numpy(times)

    _change_feat_format._genrec_fixed = True
    Dataset._change_feat_format = _change_feat_format


def _honour_data_path() -> None:
    from recbole.config import Config

    original = Config._set_default_parameters
    if getattr(original, "_genrec_fixed", False):
        return

    def _set_default_parameters(self):
        original(self)
        user_path = self.external_config_dict.get("data_path")
        if self.dataset == "ml-100k" and user_path:
            self.final_config_dict["data_path"] = os.path.join(user_path, self.dataset)

    _set_default_parameters._genrec_fixed = True
    Config._set_default_parameters = _set_default_parameters


def _quiet_inplace_fillna() -> None:
    """Item 5 under pandas 2: RecBole's ``feat[field].fillna(..., inplace=True)`` still fills
    (pandas < 3), but warns once per float / token field of every ``.item`` / ``.user`` file it
    loads that it will stop doing so in pandas 3.  The pin makes the warning noise; silence
    exactly those warnings (and the one ``token_seq`` length count gives), from that module."""
    import warnings

    for message in ("A value is trying to be set on a copy",      # fillna(inplace=True), item 5
                    "using <built-in function len> in Series.agg"):  # token_seq lengths, item 4
        warnings.filterwarnings("ignore", message=message, category=FutureWarning,
                                module=r"recbole\.data\.dataset\.dataset")


def ensure_dir(dir_path) -> None:
    """RecBole's ``ensure_dir`` without its check-then-create race (item 9)."""
    os.makedirs(dir_path, exist_ok=True)


def _ensure_dir_race() -> None:
    # item 9: every module that imported RecBole's ensure_dir by name
    import importlib

    for name in ("recbole.utils.utils", "recbole.utils", "recbole.utils.logger", "recbole.trainer.trainer",
                 "recbole.data.dataset.dataset", "recbole.data.utils"):
        module = importlib.import_module(name)
        if hasattr(module, "ensure_dir"):
            module.ensure_dir = ensure_dir


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


def _hyperopt_generator() -> None:
    # item 11
    import recbole.trainer.hyper_tuning as hyper_tuning

    hyper_tuning.exhaustive_search = exhaustive_search


def apply() -> None:
    """Apply every fix once; safe to call many times."""
    global _APPLIED
    if _APPLIED:
        return
    _numpy_aliases()
    check_environment()
    _checkpoint_loading()
    _collector_fix()
    _no_download()
    _float64_time()
    _honour_data_path()
    _quiet_inplace_fillna()
    _ensure_dir_race()
    _hyperopt_generator()
    _APPLIED = True
