"""Model names: what RecBole's ``get_model`` says for a name that is no model (RecBole's models, ours and
the closest names) instead of failing to import lightgbm.
"""
from __future__ import annotations

import difflib
import glob
import importlib
import os
import re

import recbole
from recbole.model.abstract_recommender import AbstractRecommender

from lightning_genrec.errors import ConfigError, UnknownModelError
from lightning_genrec.models import MODELS


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
