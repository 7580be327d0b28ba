"""RecBole configuration for lightning-genrec models.

* :func:`config_path` finds a model's YAML defaults (``configs/<name>.yaml``,
  shipped in the package as ``lightning_genrec.configs``).
* ``Config`` learns to read those defaults for our models, at the place
  RecBole reads its own ``properties/model/<Model>.yaml`` (after
  ``overall.yaml``, before the dataset's YAML and everything the user passes).
* :func:`make_config` / :func:`load_data` are the checked way in: a clear
  error for an unknown model, a missing dataset or atomic file, or an invalid
  hyperparameter, before any data is loaded.
* Every model setting that RecBole's ``Config`` carries is read here and
  handed down as plain arguments: :func:`hparams_from_config` (the model's
  constructor), :func:`data_options` (its data form), and the per-model rules
  of :func:`adapt_model_config` (what a model needs of the dataset and split).
"""
from __future__ import annotations

import contextvars
import difflib
import glob
import importlib
import os
import re
import warnings
from importlib import resources

import yaml

import recbole
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.model.abstract_recommender import AbstractRecommender
from recbole.utils import ModelType, init_seed

import lightning_genrec
from lightning_genrec.content import ContentData, missing_content_message
from lightning_genrec.data import InteractionData
from lightning_genrec.errors import ConfigError, DatasetNotFoundError, UnknownModelError
from lightning_genrec.hparams import choice, integer, setting
from lightning_genrec.item_ranking import ITEM_METRICS
from lightning_genrec.metrics import ALL_METRICS
from lightning_genrec.models import CFGAN, MODELS, GenRecModule
from lightning_genrec.models.lara import AttributeData
from lightning_genrec.sequences import SequenceData
from recbole_ext.cold_start import COLD_ITEM_SETTINGS, cold_item_settings
from recbole_ext.compat import data_path_for_ml100k
from recbole_ext.heldout_users import HELDOUT_USER_SETTINGS, heldout_user_settings

#: Lightning's precision settings the bridge trainer passes on (the ``precision`` key)
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true")

#: RecBole's training keys that the bridge trainer reads, checked like hyperparameters (their defaults
#: live in configs/trainer.yaml and the model YAMLs; ``None`` here only means "not declared here")
TRAINING_SETTINGS = tuple(setting(h) for h in (
    integer("epochs", None, "training epochs (a GAN: rounds) at most."),
    integer("stopping_step", None, "validations without improvement before stopping.", low=0),
    integer("train_batch_size", None, "training examples per batch."),
    integer("eval_batch_size", None, "scores per evaluation batch."),
    choice("precision", None, PRECISIONS, "Lightning's precision setting for training and validation."),
))

# set while make_config builds the config of a RecBoleDataModule: the user's callbacks select epochs there,
# so valid_metric is not checked
_FOR_DATAMODULE = contextvars.ContextVar("for_datamodule", default=False)

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


def checked_defaults(original, name):
    """``Config._set_default_parameters``, then ml-100k's ``data_path`` (:func:`data_path_for_ml100k`), our
    models' checks (:func:`adapt_model_config`) and, for any model, the held-out user check."""

    def _set_default_parameters(self):
        original(self)
        data_path_for_ml100k(self)
        if is_genrec_model(self.model_class):
            adapt_model_config(self)
        heldout_user_settings(self)   # any model: refused here, before data loads, if it cannot score new users

    return _set_default_parameters


def checked_get_model(original, name):
    """RecBole's ``get_model``, with :class:`UnknownModelError` (RecBole's models, ours, the closest
    names) for a name that is no model: RecBole's own search then fails importing its exlib
    models' packages (lightgbm) or says only that the name is not a model."""

    def get_model(model_name):
        try:
            return original(model_name)
        except ImportError as exc:
            # only the exlib models' libraries: any other import failure is a real model's own (re-raised)
            if getattr(exc, "name", None) not in _EXLIB_LIBRARIES:
                raise
            if isinstance(model_name, str) and model_name.lower() in _exlib_models():
                raise ConfigError(f"{model_name} is one of RecBole's models over another library, which is not "
                                  f"installed here ({exc}): pip install {exc.name}") from exc
            raise unknown_model(model_name) from None   # RecBole's search fell through to the exlib models
        except (ValueError, AttributeError) as exc:
            # RecBole's "not the name of an existing model", or a module found by the lower-case name
            # without that class (a name in other case, e.g. multivae)
            if isinstance(exc, AttributeError) and str(model_name) not in str(exc):
                raise
            raise unknown_model(model_name) from None

    return get_model


def is_genrec_model(model_class) -> bool:
    """Whether ``model_class`` is the RecBole class of a lightning-genrec model (see ``registry``)."""
    return isinstance(model_class, type) and getattr(model_class, "lightning_class", None) in MODELS.values()


def _setting(config, key: str):
    return config[key] if key in config else None


def hparams_from_config(cls: type[GenRecModule], config) -> dict:
    """The model's hyperparameters that the RecBole config sets (``None`` = not set; the ones
    sized from the data, such as ``n_items``, are never read from it)."""
    return {h.name: config[h.name] for h in cls.HYPERPARAMETERS
            if not h.from_data and _setting(config, h.name) is not None}


def data_settings(data_class: type, config) -> dict:
    """``data_class.SETTINGS`` as the config sets them (defaults where it does not), checked."""
    return {h.name: h.default if _setting(config, h.name) is None else h.check(config[h.name])
            for h in data_class.SETTINGS}


def data_options(data_class: type, config) -> dict:
    """The keyword arguments of ``data_class.from_train_dataset`` that ``config`` sets."""
    options = data_settings(data_class, config)
    if issubclass(data_class, SequenceData):
        options.update(max_len=config["MAX_ITEM_LIST_LENGTH"], lookahead=int(_setting(config, "next_k") or 1))
    if issubclass(data_class, (ContentData, AttributeData)):
        options["model"] = config["model"]
    return options


def data_from_recbole(model: str, train, valid=None, test=None, config=None):
    """The data form ``model`` trains on (one row per user for a model that is not ours), from
    RecBole's three loaders and the config."""
    data_class = getattr(MODELS.get(model), "data_class", InteractionData)
    return data_class.from_recbole(train, valid, test, **data_options(data_class, config))


# -- what each kind of model needs of the dataset and the split (runs inside RecBole's Config) -------------

def _sequential_rules(config) -> None:
    """A sequential model reads each user's interactions in time order: the dataset needs its time
    field (added to ``load_col`` if missing there) and ``eval_args.order: TO``.  Leave-one-out splits
    use RecBole's sequential dataset (next-item form); other splits, and the held-out user protocol,
    its ordinary one (block form, the same split as MVAE's)."""
    name = config["model"]
    require_time_field(config, f"{name} is a sequential model: it orders each user's interactions by time")
    order = config["eval_args"]["order"]
    if order != "TO":
        raise ConfigError(f"{name} is a sequential model: eval_args.order is {order!r}; set it to 'TO' "
                          "so that validation and test come after training in time.")
    split = config["eval_args"]["split"] or {}
    if "LS" not in split or config["heldout_user_split"] is True:   # the held-out user protocol: block form too
        config["MODEL_TYPE"] = ModelType.GENERAL
        config["repeatable"] = False   # RecBole's general evaluation: history = every earlier split
    elif config["save_dataset"] and (config["sequence_rows"] or "lean") == "lean":
        raise ConfigError(f"save_dataset: {name}'s next-item rows are lean (recbole_ext.lean_sequences): a saved "
                          "copy would lack the item lists RecBole's own sequential models read from the same file. "
                          "Set sequence_rows: recbole to save RecBole's rows, or save_dataset: false.")


def _content_rules(config) -> None:
    """A content model: the ``.item`` file must have the ``content_fields`` (added to ``load_col``);
    ``content_items: all`` with the cold-start item protocol is refused before any data loads (its
    held-out items must not be learned from; ``auto`` resolves to ``train`` there, in
    ``ContentData.from_train_dataset``, which reads the split itself)."""
    settings = data_settings(ContentData, config)
    require_item_fields(config, settings["content_fields"])
    switch = COLD_ITEM_SETTINGS[0]
    cold = config[switch.name] is not None and bool(switch.check(config[switch.name]))
    if cold and settings["content_items"] == "all":
        raise ConfigError(f"{config['model']}: content_items: all learns from every item's content, but "
                          "cold_item_split holds items out as new items whose content must stay unseen until "
                          "they are scored. Set content_items: train (or auto), or remove cold_item_split.")


def _attribute_rules(config) -> None:
    """An attribute model: the ``.item`` file must have the ``attribute_fields`` as token / token_seq
    fields (added to ``load_col``)."""
    fields = config["attribute_fields"]
    if fields is not None and len(fields) == 0:
        raise ConfigError(f"{config['model']}: attribute_fields is empty; name the token / token_seq item fields "
                          "whose tokens are the item attributes (ml-100k: [class], the genres).")
    fields = data_settings(AttributeData, config)["attribute_fields"]
    require_item_fields(config, fields, ("token", "token_seq"), "attribute_fields")


def _cfgan_rules(config) -> None:
    """Item mode conditions on the training matrix only: ``test_input: train_valid`` is refused."""
    if config["mode"] == "item" and config["test_input"] == "train_valid":
        raise ConfigError("CFGAN mode 'item' scores from the items' training columns; test_input: "
                          "train_valid (scoring test users from validation rows too) needs mode: user.")


def model_rules(cls: type[GenRecModule]) -> list:
    """The rules that apply to ``cls``: by what it reads (sequences, item content, item attributes)
    and, for CFGAN, its own."""
    rules = []
    if cls.sequential:
        rules.append(_sequential_rules)
    if issubclass(cls.data_class, ContentData):
        rules.append(_content_rules)
    if issubclass(cls.data_class, AttributeData):
        rules.append(_attribute_rules)
    if issubclass(cls, CFGAN):
        rules.append(_cfgan_rules)
    return rules


def adapt_model_config(config) -> None:
    """Every check of a lightning-genrec model's config that needs no data: its rules
    (:func:`model_rules`), the time field wherever ``eval_args.order`` is ``TO``, the
    hyperparameters, data and training settings (:func:`check_hparams`), options that cannot be
    honoured, and a warning for each unknown key.  Runs inside RecBole's ``Config``, so
    ``recbole.quick_start.run_recbole`` gets them too, before any data loads."""
    for rule in model_rules(MODELS[config["model"]]):   # first: a model's own reason is the clearer message
        rule(config)
    if (config["eval_args"] or {}).get("order") == "TO":
        require_time_field(config, "eval_args.order is 'TO' (time order)")
    check_hparams(config, selection=not _FOR_DATAMODULE.get())
    check_processes(config)
    warn_unknown_keys(config)


def check_processes(config) -> None:
    """``nproc`` / ``world_size`` / ``offset``: whole numbers that fit together (RecBole would hang or
    fail deep inside ``torch.distributed`` otherwise)."""
    values = {}
    for key, low in (("nproc", 1), ("world_size", -1), ("offset", 0)):
        value = config[key] if key in config else None
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{key}={value!r}: must be an integer >= {low}.")
        values[key] = value
    nproc, world = values.get("nproc", 1), values.get("world_size", -1)
    if world > 0 and (world < nproc or world % nproc):
        raise ConfigError(f"world_size={world} with nproc={nproc}: world_size is the number of processes on all "
                          "machines together, a multiple of nproc (the processes of each machine).")


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


def item_file_header(config) -> dict[str, str] | None:
    """``{field: type}`` of the dataset's ``.item`` file header, or ``None`` if there is no such file."""
    path = os.path.join(config["data_path"], f"{config['dataset']}.item")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split(config["field_separator"] or "\t")
    return dict((c.split(":") + [""])[:2] for c in header)


def require_item_fields(config, fields, kinds: tuple[str, ...] | None = None, what: str = "content_fields") -> None:
    """Before data loads: raise ``ConfigError`` unless the ``.item`` file has ``fields`` (of one of
    the ``kinds``, e.g. ``("token", "token_seq")``); add them to ``load_col`` (RecBole's ml-100k
    default loads interactions only).  A missing dataset is left to the dataset checks."""
    header = item_file_header(config)
    if header is None and not os.path.isfile(os.path.join(config["data_path"], f"{config['dataset']}.inter")):
        return
    if header is None or any(f not in header for f in fields):
        raise ConfigError(missing_content_message(config["model"], config["dataset"], fields,
                                                  None if header is None else list(header), what))
    wrong = [f"{f} ({header[f]})" for f in fields if kinds and header[f] not in kinds]
    if wrong:
        raise ConfigError(f"{config['model']}: the item field{'s' if len(wrong) > 1 else ''} {', '.join(wrong)} "
                          f"cannot be used: {what} must be {' or '.join(kinds)} fields of {config['dataset']}.item.")
    load_col = config["load_col"]
    if isinstance(load_col, dict):
        item_cols = list(load_col.get("item") or [config["ITEM_ID_FIELD"]])
        load_col["item"] = item_cols + [f for f in fields if f not in item_cols]


_RECBOLE_SUBPACKAGES = ("general_recommender", "context_aware_recommender", "sequential_recommender",
                        "knowledge_aware_recommender")


def known_models() -> list[str]:
    """Our models, then RecBole's (the model classes its subpackages export, and its exlib models,
    read from their files: importing them needs lightgbm / xgboost)."""
    names = set()
    for sub in _RECBOLE_SUBPACKAGES:
        pkg = importlib.import_module(f"recbole.model.{sub}")
        names.update(n for n, obj in vars(pkg).items()
                     if isinstance(obj, type) and issubclass(obj, AbstractRecommender))
    for path in glob.glob(os.path.join(os.path.dirname(recbole.__file__), "model", "exlib_recommender", "*.py")):
        with open(path, encoding="utf-8") as f:
            names.update(n for n in re.findall(r"^class (\w+)\(", f.read(), flags=re.M)
                         if n.lower() == os.path.splitext(os.path.basename(path))[0])
    return list(MODELS) + sorted(names - set(MODELS))


#: the libraries RecBole's exlib models import (its package imports them all when searched)
_EXLIB_LIBRARIES = ("lightgbm", "xgboost")


def _exlib_models() -> set[str]:
    """The lower-case names of RecBole's exlib models (xgboost, lightgbm), from its files."""
    folder = os.path.join(os.path.dirname(recbole.__file__), "model", "exlib_recommender")
    return {os.path.splitext(f)[0] for f in os.listdir(folder) if f.endswith(".py") and not f.startswith("_")}


def unknown_model(model) -> UnknownModelError:
    """The error for a name that is no model: our models, RecBole's, and the closest names."""
    names = known_models()
    close = difflib.get_close_matches(str(model), names, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return UnknownModelError(f"unknown model {model!r}.{hint} lightning-genrec models: {', '.join(MODELS)}; "
                             f"RecBole models: {', '.join(n for n in names if n not in MODELS)}.")


def check_model(model) -> None:
    """Raise :class:`UnknownModelError` unless ``model`` (a name) is a model RecBole or we have."""
    if not isinstance(model, str) or model in MODELS:
        return
    from recbole.utils import get_model   # RecBole's, as this package installs it (checked_get_model)

    get_model(model)


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


def require_time_field(config, why: str) -> None:
    """Raise :class:`ConfigError` (starting with ``why``) unless the dataset's ``.inter`` file
    has ``TIME_FIELD``; make sure ``load_col`` loads it (RecBole's default loads user and item only).
    A missing file is left to the dataset checks."""
    time_field, name = config["TIME_FIELD"], config["dataset"]
    path = os.path.join(config["data_path"], f"{name}.inter")
    if config["benchmark_filename"]:
        path = os.path.join(config["data_path"], f"{name}.{config['benchmark_filename'][0]}.inter")
    if not os.path.isfile(path):
        return
    with open(path, encoding="utf-8") as f:
        header = [c.split(":")[0] for c in f.readline().rstrip("\n").split(config["field_separator"] or "\t")]
    if not time_field or time_field not in header:
        where = ("TIME_FIELD is not set" if not time_field else
                 f"{os.path.basename(path)} has no field {time_field!r} (its fields: {', '.join(header)})")
        raise ConfigError(f"{why}, but {where}. Use a dataset with a timestamp column, or set TIME_FIELD to "
                          "the column that orders interactions.")
    load_col = config["load_col"]
    if isinstance(load_col, dict) and "inter" in load_col and time_field not in load_col["inter"]:
        load_col["inter"] = [*load_col["inter"], time_field]


_METRIC_NAMES = "NDCG, Recall, TruncatedRecall, Precision, MRR, Novelty, ItemCoverage, GiniIndex"


def check_hparams(config, selection: bool = True) -> None:
    """Validate a lightning-genrec model's hyperparameters and evaluation settings
    (with ``selection``, also that ``valid_metric`` is one the bridge trainer can select on)."""
    cls = MODELS.get(config["model"])
    if cls is None:
        return
    cls.check_hparams(**hparams_from_config(cls, config))
    data_settings(cls.data_class, config)
    for h in TRAINING_SETTINGS:
        h.check(config[h.name])
    modes = config["eval_args"]["mode"]
    if any(mode != "full" for mode in modes.values()):
        raise ConfigError(f"{config['model']} ranks all items, but eval_args.mode is {modes}; "
                          "set eval_args: {mode: full}.")
    item_on = cls.item_metrics if config["item_metrics"] is None else bool(config["item_metrics"])
    if item_on and cls.sequential:
        raise ConfigError(f"item_metrics: {config['model']} is a sequential model (it scores the next item of each "
                          "sequence); item -> users metrics are for general models. Set item_metrics: false.")
    if not selection:
        return
    name, _, k = str(config["valid_metric"]).lower().partition("@")
    topk = config["topk"] if isinstance(config["topk"], list) else [config["topk"]]
    names = ALL_METRICS + (tuple(f"item_{m}" for m in ITEM_METRICS) if item_on else ())
    if name not in names or not k.isdigit() or int(k) not in topk:
        item_text = (", or item -> users item_precision, item_ndcg, item_map" if item_on else
                     " (item_ndcg etc. need item_metrics: true)" if name.startswith("item_") else "")
        raise ConfigError(f"valid_metric={config['valid_metric']!r} cannot select {config['model']}'s epochs: use "
                          f"one of {_METRIC_NAMES}{item_text} at a K in topk={topk} (e.g. NDCG@{max(topk)}).")


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
