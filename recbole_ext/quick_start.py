"""``run_recbole`` and ``run`` without ray, with lightning-genrec's checks and a readable summary.

Same arguments and result dict as ``recbole.quick_start.run_recbole`` / ``run`` (which also
work after ``import recbole_ext``), plus ``comet_archive`` where an offline Comet archive was
written and ``train_steps`` (a lightning-genrec model's optimizer steps, per process).  Works for RecBole's own models too.
"""
from __future__ import annotations

import sys
from logging import getLogger

import torch.distributed as dist
import torch.multiprocessing as mp
from recbole.utils import get_model, get_trainer, init_logger, init_seed, set_color

from lightning_genrec.errors import USER_ERRORS
from recbole_ext.config import load_data, make_config
from recbole_ext.model_settings import is_genrec_model
from recbole_ext.console import log_file
from recbole_ext.processes import cpu_processes_refused, several_processes


def run_recbole(model=None, dataset=None, config_file_list=None, config_dict=None, saved=True):
    """Train and evaluate ``model`` on ``dataset`` as RecBole does; return RecBole's result dict."""
    config = make_config(model, dataset, config_file_list, config_dict)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logger = getLogger()
    logger.info(sys.argv)
    logger.info(config)
    _, train_data, valid_data, test_data = load_data(config)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    logger.info(model)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    best_valid_score, best_valid_result = trainer.fit(train_data, valid_data, saved=saved,
                                                      show_progress=config["show_progress"])
    test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=config["show_progress"])
    logger.info(set_color("best valid ", "yellow") + f": {best_valid_result}")
    logger.info(set_color("test result", "yellow") + f": {test_result}")
    if several_processes(config) and dist.is_initialized():
        dist.destroy_process_group()
    return {
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
        "comet_archive": getattr(trainer, "comet_archive", None),
        # optimizer steps of a lightning-genrec model's training (per process: the same on each)
        "train_steps": getattr(getattr(trainer, "lightning_trainer", None), "global_step", None),
        "log_file": log_file(),
        "saved_model_file": trainer.saved_model_file if saved else None,
    }


def run(model=None, dataset=None, config_file_list=None, config_dict=None, saved=True, nproc=1, world_size=-1,
        ip="localhost", port="5678", group_offset=0):
    """``run_recbole`` in ``nproc`` processes on this machine (RecBole's ``run``), which train together
    through Lightning's DDP (:mod:`recbole_ext.processes`; CPU processes join with gloo); returns
    rank 0's result.  Several machines: the same call on each, with the total ``world_size``, rank 0's
    ``ip`` / ``port``, and ``group_offset`` = the rank of this machine's first process."""
    if nproc == 1 and world_size <= 0:
        return run_recbole(model, dataset, config_file_list, config_dict, saved)
    config_dict = dict(config_dict or {}, nproc=nproc, world_size=world_size if world_size > 0 else nproc,
                       ip=ip, port=str(port), offset=group_offset)
    config = make_config(model, dataset, config_file_list, config_dict)   # every check, before any process starts
    if not is_genrec_model(get_model(config["model"])) and config["device"].type != "cuda":
        raise cpu_processes_refused(nproc, config["model"])
    queue = mp.get_context("spawn").SimpleQueue()
    try:
        mp.spawn(_run_process, args=(model, dataset, config_file_list, config_dict, saved, queue), nprocs=nproc,
                 join=True)
    except mp.ProcessRaisedException:
        outcome = None if queue.empty() else queue.get()
        if isinstance(outcome, BaseException):
            raise outcome from None          # the process's own error (one line on the command line)
        raise
    return None if queue.empty() else queue.get()


def _run_process(local_rank, model, dataset, config_file_list, config_dict, saved, queue):
    """One of :func:`run`'s processes; rank 0 hands its result (or its error) back."""
    try:
        result = run_recbole(model, dataset, config_file_list, dict(config_dict, local_rank=local_rank), saved)
    except USER_ERRORS as exc:
        if local_rank == 0:
            queue.put(exc)
        raise
    if local_rank == 0:
        queue.put(result)


def format_results(result: dict) -> str:
    """A metrics table: one row per metric, one column per K, valid and test."""
    rows: dict[str, dict[str, float]] = {}
    ks: list[int] = []
    for phase, label in (("best_valid_result", "valid"), ("test_result", "test")):
        for key, value in (result.get(phase) or {}).items():
            name, _, k = key.partition("@")
            rows.setdefault(name, {})[f"{label}@{k}"] = value
            if k and int(k) not in ks:
                ks.append(int(k))
    ks.sort()
    columns = [f"{p}@{k}" for p in ("valid", "test") for k in ks]
    width = max([len(n) for n in rows] + [6])
    lines = [" " * width + "".join(f"{c:>12}" for c in columns)]
    for name, values in rows.items():
        lines.append(f"{name:<{width}}" + "".join(
            f"{values[c]:>12.4f}" if c in values else f"{'':>12}" for c in columns))
    return "\n".join(lines)
