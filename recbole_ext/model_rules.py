"""What each kind of lightning-genrec model needs of the data set and the split, checked inside RecBole's
``Config`` (:func:`checked_defaults`), so every entry point refuses a bad setting before any data loads.
"""
from __future__ import annotations

import os

from recbole.utils import ModelType

from lightning_genrec.content import ContentData, missing_content_message
from lightning_genrec.errors import ConfigError
from lightning_genrec.models import CFGAN, MODELS, GenRecModule
from lightning_genrec.models.lara import AttributeData
from recbole_ext.cold_start import COLD_ITEM_SETTINGS
from recbole_ext.compat import data_path_for_ml100k
from recbole_ext.config_keys import warn_unknown_keys
from recbole_ext.heldout_users import heldout_user_settings
from recbole_ext.model_settings import _FOR_DATAMODULE, check_hparams, data_settings, is_genrec_model


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
