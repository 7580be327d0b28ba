"""The exceptions users catch, in one place (the bottom layer: this module imports nothing of ours).

Each message says what was wrong and what to change; the command line prints it as one line.
"""
from __future__ import annotations


class ConfigError(ValueError):
    """A configuration that lightning-genrec cannot run, with what to change."""


class UnknownModelError(ConfigError):
    """The model name is neither a lightning-genrec nor a RecBole model."""


class DatasetNotFoundError(FileNotFoundError):
    """A RecBole dataset folder or one of its atomic files is missing."""


class CheckpointError(ValueError):
    """A file given as a RecBole checkpoint that is not one (empty, truncated, garbage, a Lightning ``.ckpt``)."""


class DataFileError(ValueError):
    """An atomic data file that cannot be read as it is: the message names the file, the line and the fix."""


class DataFileWarning(UserWarning):
    """An atomic data file RecBole reads, but perhaps not as meant (lines it pads or cuts, repeated
    interactions): the data loads as in RecBole, and the message says what to check."""


class HyperparameterError(ConfigError):
    """A hyperparameter (or a data setting) is unknown or outside its allowed range."""


class MissingContentError(ValueError):
    """The dataset lacks the item fields a content or attribute model needs."""


class RecommendError(ValueError):
    """A recommendation request that cannot be answered as asked: ids or tokens the data set does not
    know (the message names them), or a question the model cannot answer (the message says which can)."""


class GANCollapseError(RuntimeError):
    """The GAN stopped learning (non-finite loss, a discriminator that always wins, or a
    generator whose output ignores its condition)."""


#: what the command line reports as one line (exit status 2) instead of a traceback
USER_ERRORS = (CheckpointError, ConfigError, DataFileError, FileNotFoundError, FloatingPointError, GANCollapseError,
               MissingContentError, RecommendError)

__all__ = ["CheckpointError", "ConfigError", "DataFileError", "DataFileWarning", "DatasetNotFoundError", "GANCollapseError", "HyperparameterError", "MissingContentError",
           "RecommendError", "USER_ERRORS", "UnknownModelError"]
