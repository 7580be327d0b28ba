"""Quiet runs: for lightning-genrec models the screen shows what a person needs, the log file keeps the rest.

RecBole's ``init_logger`` sends every record to the screen and to ``log/<model>/...log``.  For our models
(:func:`quiet_init_logger`) the screen then shows only warnings and errors and the lines marked for it
(``extra={"console": True}``: one line per validation); RecBole's configuration dump, the model printout and
the per-epoch lines in RecBole's format go to the log file only.  ``verbose: true`` (the command line's
``--verbose``) or RecBole's ``state: DEBUG`` shows everything, as RecBole does.  RecBole's own models keep
RecBole's output.  While Lightning fits (:func:`quiet_lightning`), its start-up notes go to the log file
too, and Comet's chatter (:func:`comet_to_log_file`).
"""
from __future__ import annotations

import contextlib
import logging
import os
import warnings

import colorlog

#: loggers whose INFO records are start-up notes (devices, tips, "fit stopped: max_epochs reached")
LIGHTNING_LOGGERS = ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric")


class ConsoleFilter(logging.Filter):
    """Lets through warnings and worse, and records marked ``console``."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or bool(getattr(record, "console", False))


def is_quiet(config) -> bool:
    """Whether a run of ``config`` shows only the console lines: one of our models, not ``verbose``,
    not RecBole's ``state: DEBUG``."""
    model_class = getattr(config, "model_class", None)
    ours = getattr(model_class, "lightning_class", None) is not None
    state = str(config["state"] or "info").lower()
    verbose = "verbose" in config and str(config["verbose"]).lower() in ("true", "1")
    return ours and not verbose and state != "debug"


def _console_handlers(logger: logging.Logger) -> list[logging.Handler]:
    return [h for h in logger.handlers if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]


def _recboles_screen(handler: logging.Handler) -> bool:
    """RecBole's own screen handler (``init_logger``'s, with its coloured format), not one a user or a
    test framework added to the root logger."""
    return type(handler) is logging.StreamHandler and isinstance(handler.formatter, colorlog.ColoredFormatter)


def log_file() -> str | None:
    """The file RecBole's ``init_logger`` writes to (the last one it opened), if any."""
    files = [h.baseFilename for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    return files[-1] if files else None


def quiet_init_logger(original, name):
    """``init_logger``, then the screen filter for our models (see the module docstring)."""

    def init_logger(config):
        original(config)
        quiet = is_quiet(config)
        for handler in filter(_recboles_screen, logging.getLogger().handlers):
            ours = [f for f in handler.filters if isinstance(f, ConsoleFilter)]
            if quiet and not ours:
                handler.addFilter(ConsoleFilter())
            elif not quiet:
                for f in ours:
                    handler.removeFilter(f)

    return init_logger


@contextlib.contextmanager
def quiet_lightning(quiet: bool):
    """Lightning's INFO notes to the log file only (and the deprecation warning Lightning 2.6's own code
    raises on torch 2.13 at every fit), for the duration of a fit; everything as it was afterwards."""
    if not quiet:
        yield
        return
    loggers = [logging.getLogger(n) for n in LIGHTNING_LOGGERS]
    saved = [(lg, lg.handlers[:], lg.propagate) for lg in loggers]
    try:
        for lg in loggers:
            lg.handlers = [h for h in lg.handlers if h not in _console_handlers(lg)]
            lg.propagate = True            # to RecBole's handlers: the file, and the screen's filter
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=Warning)
            yield
    finally:
        for lg, handlers, propagate in saved:
            lg.handlers, lg.propagate = handlers, propagate


#: what :func:`comet_to_log_file` changed, put back by :func:`restore_comet`
_COMET_SAVED: dict = {}


@contextlib.contextmanager
def comet_to_log_file(quiet: bool):
    """Comet's chatter to RecBole's log file instead of the screen, for a Comet experiment made in the
    block, until :func:`restore_comet` (its errors stay on screen; offline, its warnings are about what
    it could not record, such as the machine's address).  Comet sets its screen handler up when first
    imported: the block imports it."""
    path = log_file()
    if not quiet or path is None:
        yield
        return
    before = os.environ.get("COMET_LOGGING_CONSOLE")
    os.environ["COMET_LOGGING_CONSOLE"] = "ERROR"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("COMET_LOGGING_CONSOLE", None)
        else:
            os.environ["COMET_LOGGING_CONSOLE"] = before
    restore_comet()                                  # an earlier run's changes
    comet = logging.getLogger("comet_ml")
    screens = _console_handlers(comet)
    handler = logging.FileHandler(path)
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)-15s COMET %(levelname)s  %(message)s"))
    _COMET_SAVED.update(levels=[(h, h.level) for h in screens], level=comet.level, file=handler)
    for screen in screens:
        screen.setLevel(max(screen.level, logging.ERROR))
    comet.addHandler(handler)
    if comet.level == logging.NOTSET or comet.level > logging.INFO:
        comet.setLevel(logging.INFO)         # its screen handler stays at ERROR


def restore_comet() -> None:
    """Comet's logging as it was before :func:`comet_to_log_file` (after its experiment has ended)."""
    if not _COMET_SAVED:
        return
    comet = logging.getLogger("comet_ml")
    for handler, level in _COMET_SAVED["levels"]:
        handler.setLevel(level)
    comet.setLevel(_COMET_SAVED["level"])
    comet.removeHandler(_COMET_SAVED["file"])
    _COMET_SAVED["file"].close()
    _COMET_SAVED.clear()


__all__ = ["ConsoleFilter", "comet_to_log_file", "is_quiet", "log_file", "quiet_init_logger", "quiet_lightning",
           "restore_comet"]
