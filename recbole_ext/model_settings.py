"""A lightning-genrec model's settings as RecBole's ``Config`` carries them, handed down as plain arguments:
:func:`hparams_from_config` (the model's constructor), :func:`data_options` (its data form), the training
keys the bridge trainer reads (:data:`TRAINING_SETTINGS`), and :func:`check_hparams`, which checks them.
"""
from __future__ import annotations

import contextvars

from lightning_genrec.content import ContentData
from lightning_genrec.data import InteractionData
from lightning_genrec.errors import ConfigError
from lightning_genrec.hparams import choice, integer, setting
from lightning_genrec.item_ranking import ITEM_METRICS
from lightning_genrec.metrics import ALL_METRICS
from lightning_genrec.models import MODELS, GenRecModule
from lightning_genrec.models.lara import AttributeData
from lightning_genrec.sequences import SequenceData


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
