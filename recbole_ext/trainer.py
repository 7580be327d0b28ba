"""A RecBole ``Trainer`` that hands the fitting loop to a Lightning ``Trainer``.

RecBole selects it for every lightning-genrec model (``recbole.trainer.<Name>Trainer``).
``fit`` trains the model's LightningModule on one-row-per-user loaders built
from RecBole's split, validates with the vectorized metrics (equal to
RecBole's evaluator), keeps the best epoch's weights by ``valid_metric``, stops
early by RecBole's own rule (``stopping_step``) and saves a RecBole-format
checkpoint of the best epoch.  ``evaluate`` is
RecBole's own, so test results come from RecBole's evaluator.

Config keys it reads besides RecBole's: ``comet`` (bool, log to Comet),
``comet_project``, ``comet_offline_directory``, ``precision`` (Lightning's; RecBole's ``use_gpu`` and
``gpu_id`` decide the device, as for RecBole's own models).  For models with item -> users
metrics on (LARA; any model with ``item_metrics: true``) ``evaluate`` adds
``item_precision@K``, ``item_ndcg@K`` and ``item_map@K`` to RecBole's result.
"""
from __future__ import annotations

import copy
import math
import os
from collections import Counter
from time import time

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.strategies import DDPStrategy
from recbole.trainer import Trainer
from recbole.utils import calculate_valid_score, dict2str, early_stopping, get_local_time, set_color

from lightning_genrec.comet import comet_logger
from lightning_genrec.data import eval_loader, train_loader, users_per_eval_batch
from lightning_genrec.item_ranking import item_metric_names
from recbole_ext.config import require_users
from recbole_ext.console import comet_to_log_file, is_quiet, quiet_lightning, restore_comet
from recbole_ext.processes import ONE_PROCESS, RecBoleProcesses, global_rank, several_processes


class _RecBoleLog(pl.Callback):
    """RecBole's epoch loop around Lightning's: per-epoch log lines in RecBole's format,
    RecBole's ``early_stopping`` rule (a tie counts as an improvement; stop after
    ``stopping_step`` + 1 validations without one), its ``callback_fn``, timings, and
    the best epoch's weights (kept in memory: re-writing a checkpoint at every
    improvement cost ~40 % of an ml-100k epoch)."""

    def __init__(self, owner: "LightningTrainer", monitor: str, bigger: bool, stopping_step: int,
                 callback_fn=None, verbose: bool = True):
        self.owner, self.monitor, self.bigger, self.stopping_step = owner, monitor, bigger, stopping_step
        self.callback_fn, self.verbose = callback_fn, verbose
        self.fit_start = self.epoch_start = 0.0
        self.train_seconds: float | None = None
        self.best_score = -math.inf if bigger else math.inf
        self.cur_step = 0
        self.best_epoch = -1
        self.best_state: dict | None = None
        self.best_optimizer_states: list | None = None   # kept for a model that restarts from its best epoch
        self.best_result: dict[str, float] = {}   # every valid/ metric Lightning logged at the best epoch
        self._valid_line: str | None = None

    def on_fit_start(self, trainer, pl_module):
        self.fit_start = time()

    def on_train_epoch_start(self, trainer, pl_module):
        self.epoch_start, self.train_seconds, self._valid_line = time(), None, None

    def on_validation_start(self, trainer, pl_module):
        if not trainer.sanity_checking and self.train_seconds is None:
            self.train_seconds = time() - self.epoch_start      # Lightning validates inside the epoch

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        score = float(trainer.callback_metrics[self.monitor])
        epoch = trainer.current_epoch
        self.owner.valid_log.append({"epoch": epoch, "seconds": time() - self.fit_start, "valid_score": score})
        self.best_score, self.cur_step, stop, improved = early_stopping(
            score, self.best_score, self.cur_step, max_step=self.stopping_step, bigger=self.bigger)
        if improved:
            self.best_epoch = epoch
            self.best_state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
            if getattr(pl_module, "keeps_restart_state", False):
                self.best_optimizer_states = [copy.deepcopy(o.state_dict()) for o in trainer.optimizers]
            self.best_result = {k.split("/", 1)[1]: float(v) for k, v in trainer.callback_metrics.items()
                                if k.startswith("valid/")}
        if stop:
            trainer.should_stop = True
        self._valid_line = (set_color("epoch %d evaluating", "green") % epoch
                            + f" [{set_color('valid_score', 'blue')}: {score:.6f}]")
        if self.callback_fn:
            self.callback_fn(epoch, score)

    def plateau_request(self) -> bool:
        """Whether this rule asks to stop: ``stopping_step`` + 1 validations without improvement."""
        return self.cur_step > self.stopping_step

    def reset_patience(self) -> None:
        """Wait the whole ``stopping_step`` again (the model went back to its best epoch)."""
        self.cur_step = 0

    def restart_state(self):
        """(weights, optimizer states, epoch) of the best epoch so far, for a model that restarts from
        it (:class:`~lightning_genrec.models.base.VAEModule`); ``None`` before the first validation."""
        if self.best_state is None:
            return None
        return self.best_state, self.best_optimizer_states, self.best_epoch

    def on_train_epoch_end(self, trainer, pl_module):
        seconds = self.train_seconds if self.train_seconds is not None else time() - self.epoch_start
        self.owner.epoch_seconds.append(seconds)
        if not self.verbose:
            return
        loss = trainer.callback_metrics.get("train/loss_epoch")
        loss_text = f"{float(loss):.4f}" if loss is not None else "n/a"
        self.owner.logger.info(set_color("epoch %d training", "green") % trainer.current_epoch
                               + f" [{set_color('time', 'blue')}: {seconds:.2f}s, "
                               + f"{set_color('train loss', 'blue')}: {loss_text}]")
        if self._valid_line:
            self.owner.logger.info(self._valid_line)
            if self.owner.quiet:     # the screen's one line per validation (the two above: the log file)
                line = (f"epoch {trainer.current_epoch}: train loss {loss_text} ({seconds:.1f} s), valid "
                        f"{self.monitor.split('/', 1)[1]} {self.owner.valid_log[-1]['valid_score']:.4f}")
                bar = trainer.progress_bar_callback
                if bar is not None and bar.is_enabled:
                    bar.print(line)                                     # above the bar, not inside it
                else:
                    self.owner.logger.info(line, extra={"console": True})
        if trainer.should_stop and self._valid_line and trainer.current_epoch + 1 >= (trainer.fit_loop.min_epochs or 0):
            self.owner.logger.info(f"Finished training, best eval result in epoch {self.best_epoch}")


class LightningTrainer(Trainer):
    """RecBole's Trainer API; Lightning's loop."""

    def __init__(self, config, model):
        if several_processes(config):
            # RecBole's Trainer wraps its model for GPU DDP here; ours trains through Lightning's DDP instead
            config["single_spec"] = True
            try:
                super().__init__(config, model)
            finally:
                config["single_spec"] = False
            # every process reloads the checkpoint rank 0 writes: one file name (RecBole stamps it with the time)
            names = [self.saved_model_file]
            dist.broadcast_object_list(names, src=0)
            self.saved_model_file = names[0]
        else:
            super().__init__(config, model)
        self.comet = None
        self.comet_archive: str | None = None
        self.quiet = is_quiet(config)     # the screen shows the console lines only (recbole_ext.console)
        self.lightning_trainer: pl.Trainer | None = None
        self.epoch_seconds: list[float] = []
        self.valid_log: list[dict] = []
        self._valid_data = None

    def _make_comet(self):
        if not self.config["comet"] or (several_processes(self.config) and global_rank(self.config) != 0):
            return None
        offline_dir = self.config["comet_offline_directory"] or os.path.join("log", "comet")
        return comet_logger(project=self.config["comet_project"] or "lightning-genrec",
                            name=f"{self.config['model']}-{self.config['dataset']}-{get_local_time()}",
                            offline_directory=offline_dir)

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        require_users(valid_data, "valid", self.config)
        self.eval_collector.data_collect(train_data)
        self._valid_data = valid_data
        module, data = self.model.module, self.model.data
        validate = bool(valid_data) and self.eval_step > 0
        if valid_data:   # also without validation epochs: test_input='train_valid' reads it
            data.add_split(valid_data, "valid")

        monitor = f"valid/{self.valid_metric}"
        progress = _RecBoleLog(self, monitor, self.valid_metric_bigger, self.stopping_step, callback_fn, verbose)
        with comet_to_log_file(self.quiet and bool(self.config["comet"])):
            self.comet = self._make_comet()
        if self.comet is not None:
            self.comet.log_hyperparams({f"recbole/{k}": v for k, v in self.config.final_config_dict.items()
                                        if isinstance(v, (int, float, str, bool, list))})
        with quiet_lightning(self.quiet):   # its device notes are made here
            self.lightning_trainer = pl.Trainer(
                max_epochs=self.epochs, accelerator="gpu" if self.device.type == "cuda" else "cpu",
                precision=self.config["precision"] or "32-true",
                logger=self.comet if self.comet is not None else False, callbacks=[progress],
                enable_checkpointing=False, enable_progress_bar=show_progress, enable_model_summary=False,
                check_val_every_n_epoch=max(1, self.eval_step), num_sanity_val_steps=0,
                # Comet gets a point every 50 steps, or at least one an epoch on small data
                log_every_n_steps=max(1, min(50, math.ceil(len(data.train_examples()) / self.config["train_batch_size"]))),
                limit_val_batches=1.0 if validate else 0, default_root_dir=self.checkpoint_dir, **self._devices())
        world, rank = self.lightning_trainer.world_size, self.lightning_trainer.global_rank
        pin = self.device.type == "cuda"
        # train_batch_size is RecBole's global batch: the processes share each one (SharedBatches)
        with quiet_lightning(self.quiet):
            self.lightning_trainer.fit(
                module, train_loader(data, self.config["train_batch_size"], seed=self.config["seed"],
                                     world_size=world, rank=rank, pin_memory=pin),
                eval_loader(data, "valid", users_per_eval_batch(self.config["eval_batch_size"], data.n_items,
                                                               block=not module.sequential),
                            world_size=world, rank=rank, pin_memory=pin) if validate else None)
        module.to(self.device)

        best_epoch = self.lightning_trainer.current_epoch - 1
        if progress.best_state is not None:
            module.load_state_dict(progress.best_state)
            best_epoch = progress.best_epoch
            self.best_valid_score, self.best_valid_result = self._best_valid(progress.best_result, valid_data,
                                                                             show_progress)
            if verbose:
                self.logger.info(set_color("best valid", "yellow") + f" (epoch {best_epoch}): "
                                 + dict2str(self.best_valid_result))
        if saved:
            self._save_checkpoint(best_epoch, verbose=verbose)   # rank 0 only
            if several_processes(self.config):
                dist.barrier()                                  # the others reload it in evaluate
        return self.best_valid_score, self.best_valid_result

    def _best_valid(self, logged: dict[str, float], valid_data, show_progress) -> tuple[float, dict]:
        """The best epoch's validation score and result in RecBole's form.  Lightning validated those
        weights already with the same metric definitions as RecBole's evaluator (tests/test_metrics.py),
        so where it logged every metric the config asks for, that result is used; otherwise (a RecBole
        metric we do not compute, such as Hit or MAP) RecBole's evaluator runs once more.  At ML-20M
        size a validation pass is minutes."""
        names = [f"{m.lower()}@{k}" for m in self.config["metrics"] for k in self.config["topk"]]
        if self.model.module.item_metrics:
            names += item_metric_names(self.config["topk"])
        if not names or any(n not in logged for n in names):
            return self._valid_epoch(valid_data, show_progress)
        places = self.config["metric_decimal_place"]
        result = {n: round(logged[n], places) for n in names}
        return calculate_valid_score(result, self.valid_metric), result

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        """RecBole's checkpoint; one written by several processes (the first of each machine) carries a
        one-process config, so ``load_data_and_model`` rebuilds one-process loaders from it."""
        if not several_processes(self.config):
            return super()._save_checkpoint(epoch, verbose=verbose, **kwargs)
        if self.config["local_rank"] != 0:
            return None
        kept = {key: self.config[key] for key in ONE_PROCESS}
        for key, value in ONE_PROCESS.items():
            self.config[key] = value
        try:
            return super()._save_checkpoint(epoch, verbose=verbose, **kwargs)
        finally:
            for key, value in kept.items():
                self.config[key] = value

    def _devices(self) -> dict:
        """The ``pl.Trainer`` arguments for the processes: one device, or Lightning's DDP in the
        processes RecBole started (``nproc``; see :mod:`recbole_ext.processes`)."""
        if not several_processes(self.config):
            return {"devices": 1}
        env = RecBoleProcesses(self.config)
        return {"devices": int(self.config["nproc"]), "num_nodes": env.num_nodes,
                "strategy": DDPStrategy(cluster_environment=env),
                "use_distributed_sampler": False}   # the loaders shard themselves (fit)

    def _register_training_counts(self) -> None:
        """Give RecBole's collector the training statistics Novelty (and RecBole's popularity
        metrics) read, from the model's own training data, when ``fit`` did not (a checkpoint
        loaded with ``load_data_and_model`` and evaluated straight away)."""
        collector, data = self.eval_collector, self.model.data
        statistics = {
            "data.num_items": lambda: data.n_items,
            "data.num_users": lambda: data.n_users,
            "data.count_items": lambda: Counter({int(i): int(n) for i, n in enumerate(data.item_counts) if n > 0}),
            # Novelty reads only how many users trained (len); not every data form keeps their ids
            "data.count_users": lambda: Counter(range(data.n_train_users)),
        }
        for key, value in statistics.items():
            if collector.register.need(key) and key not in collector.data_struct:
                collector.data_struct.set(key, value())

    @torch.no_grad()
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        phase = "valid" if eval_data is self._valid_data else "test"
        require_users(eval_data, phase, self.config)
        self._register_training_counts()
        self.model.eval_phase = phase
        try:
            self.model.plan_scoring(eval_data)   # users scored in blocks larger than RecBole's batches
            result = super().evaluate(eval_data, load_best_model, model_file, show_progress)
        finally:
            self.model.eval_phase = None
            self.model.plan_scoring(None)
        module, data = self.model.module, self.model.data
        if result is not None and module.item_metrics:   # item -> users ranking beside RecBole's metrics
            data.add_split(eval_data, phase)           # the loader evaluated, whichever it is
            places = self.config["metric_decimal_place"]
            result.update({k: round(v, places) for k, v in module.item_results(phase).items()})
        if result and eval_data is not self._valid_data and self.comet is not None:
            self.comet.log_metrics({f"test/{k}": float(v) for k, v in result.items()})
            self.end_comet()
        return result

    def end_comet(self) -> str | None:
        """End the Comet experiment (writes the offline archive); returns the archive path if offline."""
        if self.comet is None:
            return None
        try:
            self.comet.experiment.end()
            self.comet_archive = self.comet.archive_path()
            if self.comet_archive:
                self.logger.info(set_color("Comet offline archive", "blue") + f": {self.comet_archive}")
        except Exception as exc:  # Comet must never break a run
            self.logger.warning(f"Comet: could not end the experiment: {exc}")
        finally:
            restore_comet()
        self.comet = None
        return self.comet_archive
