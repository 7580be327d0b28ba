"""RecBole's hyperparameter search for our models: ``recbole.trainer.HyperTuning`` with RecBole's own
``objective_function`` (what RecBole's ``run_hyper.py`` runs), on today's stack.

Each trial trains the model with the trial's settings and keeps the epoch validation likes best;
the search compares trials on ``valid_metric`` only (RecBole's rule), and reports each trial's
test metrics beside.  A search space is RecBole's params file, one setting a line::

    anneal_cap choice [0.2,0.5,1.0]
    latent_dimension choice [64,200]

(``choice``, ``uniform``, ``quniform``, ``loguniform``; ``algo="exhaustive"`` tries every point of a
space of ``choice`` lines -- RecBole counts the points of ``choice`` lines only -- and is not cut short
by ``early_stop``).  ``configs/hyper/<model>.hyper`` is an example space per model.
Needs ``hyperopt`` (installed with the package).

Command line: ``python -m recbole_ext hyper --model=MVAE --params_file=configs/hyper/mvae.hyper``
(``hyper --help``).
"""
from __future__ import annotations

import logging
import os
import sys

from lightning_genrec.errors import ConfigError
from recbole_ext.config import make_config
from recbole_ext.model_files import packaged_file

ALGOS = ("exhaustive", "random", "bayes")


def example_space(model: str) -> str:
    """The path of the example search space of ``model`` (``configs/hyper/<model>.hyper``)."""
    path = packaged_file(f"hyper/{model.lower()}.hyper")
    if path is None:
        raise ConfigError(f"no example search space for {model}: write a params file (one 'name choice [a,b]' "
                          "line per setting) and pass it as params_file.")
    return path


def run_hyper(model: str, dataset: str = "ml-100k", params_file: str | None = None, config_file_list=None,
              config_dict: dict | None = None, algo: str = "exhaustive", max_evals: int = 100, early_stop: int = 10,
              output_file: str | None = "hyper.result"):
    """Search ``model``'s settings on ``dataset`` with RecBole's ``HyperTuning``; returns it
    (``best_params``, ``best_score``, ``params2result``).  ``params_file`` defaults to the model's
    example space; ``config_file_list`` / ``config_dict`` fix everything else (the split, epochs...);
    ``output_file``: every trial's parameters and valid / test results (RecBole's format)."""
    from recbole.quick_start import objective_function   # imports ray: only when a search runs
    from recbole.trainer import HyperTuning

    if algo not in ALGOS:
        raise ConfigError(f"algo={algo!r}: use one of {', '.join(ALGOS)}.")
    params_file = params_file or example_space(model)
    if not os.path.isfile(params_file):
        raise FileNotFoundError(f"params file {params_file} not found.")
    fixed = dict(config_dict or {}, model=model, dataset=dataset)
    with open(params_file) as f:
        searched = [line.split()[0] for line in f if len(line.split()) >= 3]
    # RecBole's Config also reads --key=value from the command line, over config_dict: those are fixed too
    command_line = {a[2:].split("=", 1)[0] for a in sys.argv[1:] if a.startswith("--")}
    clash = [name for name in searched if name in fixed or name in command_line]
    if clash:
        raise ConfigError(f"{', '.join(clash)} is both searched ({params_file}) and fixed (config_dict or the "
                          "command line): drop one.")
    make_config(model, dataset, config_file_list, fixed)        # every check of the fixed part, before any trial

    def objective(config_dict=None, config_file_list=None, saved=True):
        return objective_function({**fixed, **(config_dict or {})}, config_file_list, saved)

    tuner = HyperTuning(objective, algo=algo, early_stop=early_stop, max_evals=max_evals, params_file=params_file,
                        fixed_config_file_list=config_file_list)
    if algo == "exhaustive":   # RecBole stops "exhaustive" after early_stop trials without improvement
        from hyperopt.early_stop import no_progress_loss

        tuner.early_stop_fn = no_progress_loss(tuner.max_evals + 1)
    ray_log = logging.getLogger("ray")
    level = ray_log.level
    ray_log.setLevel(logging.ERROR)   # objective_function reports to ray.tune, which warns outside a tune session
    try:
        tuner.run()
    finally:
        ray_log.setLevel(level)
    if output_file:
        tuner.export_result(output_file=output_file)
    return tuner


__all__ = ["ALGOS", "example_space", "run_hyper"]
