"""Comet tracking that works with and without an account, and never breaks a run.

``comet_logger()`` returns a Lightning ``CometLogger`` that runs online when
``COMET_API_KEY`` is set and otherwise writes an offline archive
(``<offline_directory>/<experiment key>-*.zip``) that ``comet upload`` sends later.
(Lightning's own ``CometLogger(online=False)`` disables the experiment and
writes nothing.)  If Comet cannot start, a warning is printed and ``None`` is
returned: train without a logger rather than fail.
"""
from __future__ import annotations

import glob
import os
import warnings

from pytorch_lightning.loggers import CometLogger

DEFAULT_OFFLINE_DIRECTORY = os.path.join("log", "comet")


class GenRecCometLogger(CometLogger):
    """``CometLogger`` whose offline mode writes an archive instead of nothing."""

    def __init__(self, *, online: bool | None = None, offline_directory: str = DEFAULT_OFFLINE_DIRECTORY,
                 **kwargs):
        self._want_online = bool(os.environ.get("COMET_API_KEY")) if online is None else online
        self.offline_directory = os.path.abspath(offline_directory)
        if not self._want_online:
            os.makedirs(self.offline_directory, exist_ok=True)
            # an offline run must not phone home: comet_ml reads this when first imported
            os.environ.setdefault("COMET_ERROR_TRACKING_ENABLE", "false")
        super().__init__(online=None, offline_directory=self.offline_directory, **kwargs)

    def _create_experiment(self) -> None:
        import comet_ml

        self._experiment = comet_ml.start(
            api_key=self._api_key, workspace=self._workspace, project=self._project_name,
            experiment_key=self._experiment_key, mode=self._mode, online=self._want_online,
            experiment_config=self._comet_config)
        if self._experiment is None:
            raise comet_ml.exceptions.ExperimentNotFound("Failed to create Comet experiment.")
        self._experiment_key = self._experiment.get_key()
        self._project_name = self._experiment.project_name

    @property
    def online(self) -> bool:
        return self._want_online

    def archive_path(self) -> str | None:
        """The offline archive, once the run has ended (``None`` online or before the end)."""
        if self._want_online or not self._experiment_key:
            return None
        found = sorted(glob.glob(os.path.join(self.offline_directory, f"{self._experiment_key}*.zip")))
        return found[-1] if found else None


def comet_logger(project: str = "lightning-genrec", name: str | None = None,
                 offline_directory: str = DEFAULT_OFFLINE_DIRECTORY, online: bool | None = None,
                 **kwargs) -> GenRecCometLogger | None:
    """A Comet logger, or ``None`` (with a warning) if Comet cannot start.

    Args:
        project: Comet project name.
        name: experiment name.
        offline_directory: where offline archives go (default ``log/comet``).
        online: force a mode; default: online iff ``COMET_API_KEY`` is set.
        kwargs: passed to ``comet_ml.ExperimentConfig`` (e.g. ``tags``).
    """
    try:
        return GenRecCometLogger(project=project, name=name, offline_directory=offline_directory,
                                 online=online, **kwargs)
    except Exception as exc:  # Comet must never break a run
        warnings.warn(f"Comet logging is off for this run: {type(exc).__name__}: {exc}", stacklevel=2)
        return None
