"""Several processes through RecBole's own entry point: ``nproc``, ``world_size``, ``ip``, ``port``.

RecBole starts its processes itself (``recbole.quick_start.run(..., nproc=N)``, ``run_recbole.py
--nproc=N``, and ours: :func:`recbole_ext.quick_start.run`, ``python -m recbole_ext --nproc=N``):
each process builds its ``Config`` with a ``local_rank``, which joins a process group, and then
runs ``run_recbole``.  What this module adds:

* **CPU processes.**  RecBole's ``Config`` joins with ``nccl`` and a CUDA device only; for
  lightning-genrec models on a machine without usable GPUs the processes join with ``gloo`` on
  the CPU instead.  RecBole's own models cannot train that way (its ``Trainer`` wraps them for
  GPUs): they get a clear error.
* **Lightning's DDP in RecBole's processes.**  :class:`RecBoleProcesses` tells Lightning that the
  processes and their group already exist, so the bridge trainer's ``pl.Trainer`` trains with
  ``DDPStrategy`` in them (``recbole_ext.trainer``).
* **Evaluation equal to one process's.**  RecBole shards evaluation users with torch's
  ``DistributedSampler``, which repeats users to even out the shards, and then averages each
  process's metrics weighted by its number of batches.  Here the evaluation loaders shard users
  without repeating any (every W-th user), and the evaluator gathers what every process collected
  (the top-K lists, ranks, scores) before computing the metrics once on all users: the metrics of
  one process, whatever the model (RecBole's own ones too, on GPUs).

Several machines: start ``nproc`` processes on each with the same ``world_size``, ``ip`` and
``port`` and ``offset`` = the rank of the machine's first process (RecBole's ``group_offset``);
the first process of each machine writes the checkpoint (one file name, rank 0's) that the
machine's processes reload for testing.  A checkpoint written by several processes carries a
one-process config, so ``load_data_and_model`` loads it in one process.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
from lightning_fabric.plugins.environments import ClusterEnvironment

from lightning_genrec.data import ShardSampler
from lightning_genrec.errors import ConfigError
from recbole_ext import patches

#: what each process collected for the metrics, one entry per user evaluated (the rest is the same
#: on every process: item counts, the number of items, ...)
PER_USER_KEYS = ("rec.topk", "rec.meanrank", "rec.score", "rec.items", "data.label")
#: the process settings of a checkpoint written by several processes: it loads in one
ONE_PROCESS = {"single_spec": True, "local_rank": 0, "nproc": 1, "world_size": -1, "offset": 0}


def several_processes(config) -> bool:
    """Whether this RecBole process is one of several (RecBole's ``single_spec`` is off)."""
    return "single_spec" in config and not config["single_spec"]


def global_rank(config) -> int:
    return int(config["local_rank"]) + int(config["offset"] or 0)


class RecBoleProcesses(ClusterEnvironment):
    """The processes RecBole started, already in one process group: Lightning joins them
    (``creates_processes_externally``) instead of launching its own."""

    def __init__(self, config):
        super().__init__()
        self._world_size = int(config["world_size"])
        self._nproc = int(config["nproc"])
        self._local_rank = int(config["local_rank"])
        self._global_rank = global_rank(config)
        self._address, self._port = str(config["ip"]), int(config["port"])

    @property
    def creates_processes_externally(self) -> bool:
        return True

    @property
    def main_address(self) -> str:
        return self._address

    @property
    def main_port(self) -> int:
        return self._port

    @staticmethod
    def detect() -> bool:
        return False

    def world_size(self) -> int:
        return self._world_size

    def set_world_size(self, size: int) -> None:
        pass   # fixed by RecBole's processes

    def global_rank(self) -> int:
        return self._global_rank

    def set_global_rank(self, rank: int) -> None:
        pass

    def local_rank(self) -> int:
        return self._local_rank

    def node_rank(self) -> int:
        return self._global_rank // self._nproc

    @property
    def num_nodes(self) -> int:
        return max(1, self._world_size // self._nproc)


def cpu_processes_refused(nproc, model: str) -> ConfigError:
    """The error for one of RecBole's own models asked to train in several processes without GPUs."""
    return ConfigError(f"nproc={nproc}: RecBole trains its own models ({model}) in several processes on GPUs "
                       "only (nccl); this machine has none usable. Use nproc: 1, or a lightning-genrec model, "
                       "which trains in several CPU processes.")


def _gpus_usable(config) -> bool:
    gpu_id = str(config["gpu_id"] if config["gpu_id"] is not None else "")
    return bool(gpu_id) and torch.cuda.is_available() and bool(config["use_gpu"])


def cpu_init_device(original, name):
    """``Config._init_device``: a lightning-genrec model's processes join with gloo on the CPU when
    no GPU is usable; RecBole's own models get :func:`cpu_processes_refused` there."""

    def _init_device(self):
        d = self.final_config_dict
        if "local_rank" not in d or _gpus_usable(self):
            return original(self)
        if not getattr(self.model_class, "lightning_class", None):
            raise cpu_processes_refused(d.get("nproc"), d["model"])
        d["gpu_id"] = ""
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        if not dist.is_initialized():
            dist.init_process_group(backend="gloo", rank=global_rank(self), world_size=int(d["world_size"]),
                                    init_method=f"tcp://{d['ip']}:{d['port']}")
        d["device"] = torch.device("cpu")
        d["single_spec"] = False
        if d["local_rank"] != 0:
            d["state"], d["show_progress"], d["verbose"] = "error", False, False

    return _init_device


def _unpadded_eval_loaders(original):
    def __init__(self, config, dataset, sampler, shuffle=False):
        original(self, config, dataset, sampler, shuffle)
        if several_processes(config) and not shuffle and isinstance(self.sampler, torch.utils.data.DistributedSampler):
            # evaluation: every W-th user on each process, none repeated (the DataLoader's sampler is fixed
            # after construction; its batch sampler reads the one we put in place)
            unpadded = ShardSampler(self.sampler.dataset, dist.get_world_size(), dist.get_rank())
            self.batch_sampler.sampler = unpadded
            object.__setattr__(self, "sampler", unpadded)

    return __init__


def _gathered_evaluate(original):
    def evaluate(self, dataobject):
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dataobject = gather_struct(dataobject)
        return original(self, dataobject)

    return evaluate


def _map_reduce(self, result, num_sample):
    # the evaluator computed the metrics on every process's users already (gather_struct): every process
    # holds the same result, which RecBole's averaging (weighted by batches, in float32) would only blur
    return {key: round(float(value), self.config["metric_decimal_place"]) for key, value in result.items()}


def one_process_evaluation(original, name):
    """Evaluation in several processes equal to one process's: unpadded shards
    (``AbstractDataLoader.__init__``), metrics computed once on every process's users
    (``Evaluator.evaluate``), and no second averaging (``Trainer._map_reduce``)."""
    if name == "_map_reduce":
        return _map_reduce
    return {"__init__": _unpadded_eval_loaders, "evaluate": _gathered_evaluate}[name](original)


def run_recboles(rank, *args):
    """RecBole's ``run_recboles`` (one of the processes ``recbole.quick_start.run(nproc=N)`` spawns),
    defined here so that a spawned process, which unpickles this function by its module, imports
    ``recbole_ext`` (and so its fixes) before RecBole imports ray."""
    import recbole.quick_start  # noqa: F401  (installs this change, recording RecBole's function)

    return patches.ORIGINAL["recbole.quick_start.quick_start:run_recboles"](rank, *args)


def spawned_run_recboles(original, name):
    return run_recboles


def gather_struct(struct):
    """``struct`` with its per-user entries (:data:`PER_USER_KEYS`) concatenated over all processes
    (in rank order), so the metrics are computed once on every evaluated user."""
    mine = {key: struct.get(key) for key in PER_USER_KEYS if key in struct}
    everyone: list = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    for key in mine:
        struct.set(key, torch.cat([part[key] for part in everyone]))
    return struct


__all__ = ["ONE_PROCESS", "PER_USER_KEYS", "RecBoleProcesses", "cpu_processes_refused", "gather_struct", "global_rank", "several_processes"]
