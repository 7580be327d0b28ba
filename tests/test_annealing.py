"""KL schedules, and that the schedule state survives checkpoint / resume."""
import logging
import os
import shutil
import sys
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch

from lightning_genrec import MVAE
from recbole_ext import RecBoleDataModule
from lightning_genrec.annealing import constant, cyclical, kl_weight, linear
from recbole_ext.trainer import _RecBoleLog

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))


def test_linear_starts_at_zero_and_stops_at_cap():
    assert linear(0, 0.2, 100) == 0.0
    assert linear(10, 0.2, 100) == pytest.approx(0.1)
    assert linear(20, 0.2, 100) == pytest.approx(0.2)
    assert linear(10_000, 0.2, 100) == pytest.approx(0.2)
    assert linear(5, 0.2, 0) == 0.2


def test_cyclical_restarts_each_period():
    assert cyclical(0, 1.0, 10, 0.5) == 0.0
    assert cyclical(5, 1.0, 10, 0.5) == pytest.approx(1.0)
    assert cyclical(9, 1.0, 10, 0.5) == pytest.approx(1.0)
    assert cyclical(12, 1.0, 10, 0.5) == pytest.approx(0.4)


def test_constant_and_dispatch():
    assert constant(123, 0.3) == 0.3
    assert kl_weight("linear", 50, 1.0, 100) == 0.5
    with pytest.raises(ValueError, match="anneal_schedule"):
        kl_weight("exponential", 1, 1.0, 10)


def test_kl_weight_follows_global_step_across_resume(tiny_config, tmp_path):
    dm = RecBoleDataModule("tiny", config_dict=tiny_config, train_batch_size=16)
    model = MVAE(anneal_cap=1.0, total_anneal_steps=40)
    kw = dict(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
              default_root_dir=str(tmp_path))
    first = pl.Trainer(max_epochs=2, **kw)
    first.fit(model, datamodule=dm)
    steps = first.global_step
    assert steps == 2 * 4  # 60 users / 16 per batch = 4 steps per epoch, one row per user
    ckpt = str(tmp_path / "mid.ckpt")
    first.save_checkpoint(ckpt)

    resumed = MVAE(anneal_cap=1.0, total_anneal_steps=40)
    second = pl.Trainer(max_epochs=3, **kw)
    second.fit(resumed, datamodule=dm, ckpt_path=ckpt)
    assert second.global_step == steps + 4
    # the schedule continued from the checkpoint's step, not from 0: the resumed epoch's mean
    # weight is that of steps 8..11 (0.2..0.275), not of steps 0..3 (0..0.075)
    assert float(second.callback_metrics["train/kl_weight_epoch"]) == pytest.approx(
        sum(linear(s, 1.0, 40) for s in range(steps, steps + 4)) / 4, rel=0.05)


def test_kl_clock_counts_minibatches_of_all_processes():
    # W processes each take one step per W minibatches read in all (equal DDP shards), so beta
    # after one epoch is the same whatever W: the clock is global_step * world_size
    from types import SimpleNamespace

    model = MVAE(n_items=10, anneal_cap=1.0, total_anneal_steps=100)
    model._trainer = SimpleNamespace(world_size=1, global_step=30)
    one_process = model.kl_weight()
    model._trainer = SimpleNamespace(world_size=2, global_step=15)   # the same data read by 2 processes
    assert model.minibatches_seen() == 30
    assert model.kl_weight() == pytest.approx(one_process) == pytest.approx(0.3)
    # RecBole's door: the processes share each batch of train_batch_size (SharedBatches), so each takes
    # the steps of one process, and one step is one minibatch read in all
    from torch.utils.data import DataLoader

    from lightning_genrec.data import SharedBatches

    shared = DataLoader(range(64), batch_sampler=SharedBatches(64, 16, world_size=2, rank=1))
    model._trainer = SimpleNamespace(world_size=2, global_step=30, train_dataloader=shared)
    assert model.minibatches_seen() == 30
    assert model.kl_weight() == pytest.approx(one_process)


def test_epoch_clock_gives_the_same_beta_per_pass_whatever_the_batch_size(tiny_config, tmp_path):
    # MVAE's default horizon is in passes over the training users: the first minibatch of epoch e
    # has beta = anneal_cap * e / anneal_epochs whether an epoch is 4 minibatches or 60
    class Record(pl.Callback):
        def __init__(self):
            self.first = {}

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 0:
                self.first[trainer.current_epoch] = pl_module.kl_weight()

    for batch in (16, 1):
        dm = RecBoleDataModule("tiny", config_dict=tiny_config, train_batch_size=batch)
        record = Record()
        trainer = pl.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_progress_bar=False,
                             enable_model_summary=False, enable_checkpointing=False, default_root_dir=str(tmp_path),
                             callbacks=[record], limit_val_batches=0)
        trainer.fit(MVAE(anneal_cap=0.5, anneal_epochs=4.0), datamodule=dm)
        assert record.first == pytest.approx({0: 0.0, 1: 0.125, 2: 0.25})


def test_epoch_clock_reaches_the_cap_at_anneal_epochs_and_ignores_the_process_count():
    from types import SimpleNamespace

    model = MVAE(n_items=10, anneal_cap=0.2, anneal_epochs=50.0)
    for world, batches in ((1, 8), (2, 4)):      # W processes each read 1/W of every epoch
        loop = SimpleNamespace(epoch_loop=SimpleNamespace(batch_idx=batches // 2))
        model._trainer = SimpleNamespace(world_size=world, global_step=0, current_epoch=25, num_training_batches=batches,
                                         fit_loop=loop)
        assert model.kl_weight() == pytest.approx(0.2 * 25.5 / 50)
        model._trainer.current_epoch = 80
        assert model.kl_weight() == pytest.approx(0.2)


def test_mvae_defaults_anneal_beta_to_1_over_the_papers_200_passes():
    """The defaults chosen on validation (benchmarks/results/mvae_defaults*.md): beta is halfway at
    pass 100 and reaches 1 at pass 200, the epochs Liang et al. train; early stopping waits for it,
    unless 40 of its requests in a row have been refused (51 validations without improvement)."""
    from types import SimpleNamespace

    model = MVAE(n_items=10)
    loop = SimpleNamespace(epoch_loop=SimpleNamespace(batch_idx=0))
    model._trainer = SimpleNamespace(world_size=1, global_step=0, current_epoch=100, num_training_batches=4,
                                     fit_loop=loop)
    assert model.kl_weight() == pytest.approx(0.5)
    assert model.anneal_end_epoch() == pytest.approx(200.0)
    assert model.hparams.stop_after_anneal and model.hparams.anneal_patience == 40
    assert model.hparams.anneal_restarts == 3 and model.hparams.restart_lr_factor == 0.5
    assert model.hparams.restart_after_cap


def test_total_anneal_steps_when_set_is_liang_et_als_step_clock():
    from types import SimpleNamespace

    model = MVAE(n_items=10, anneal_cap=0.2, anneal_epochs=50.0, total_anneal_steps=1000)
    model._trainer = SimpleNamespace(world_size=2, global_step=30, current_epoch=40, num_training_batches=4)
    assert model.kl_weight() == pytest.approx(60 / 1000)          # min(cap, minibatches / total)
    # beta reaches the cap after cap * total minibatches = 200 of them, 25 epochs of 2 x 4
    assert model.anneal_end_epoch() == pytest.approx(25.0)


class _StopAtOnce(pl.Callback):
    """An early-stopping rule that asks to stop at the first validation."""

    def on_train_epoch_end(self, trainer, pl_module):
        trainer.should_stop = True


@pytest.mark.parametrize("wait, expected", [(True, 5), (False, 1)])
def test_early_stopping_waits_until_beta_reaches_its_cap(tiny_config, tmp_path, wait, expected):
    dm = RecBoleDataModule("tiny", config_dict=tiny_config, train_batch_size=32)
    model = MVAE(anneal_cap=0.2, anneal_epochs=4.5, stop_after_anneal=wait)
    trainer = pl.Trainer(max_epochs=20, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, default_root_dir=str(tmp_path),
                         callbacks=[_StopAtOnce()], limit_val_batches=0)
    trainer.fit(model, datamodule=dm)
    assert trainer.current_epoch == expected        # ceil(4.5) epochs: beta is at its cap from then on
    capped = MVAE(anneal_cap=0.2, anneal_epochs=400.0)   # a horizon past max_epochs: stop at max_epochs
    trainer = pl.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, default_root_dir=str(tmp_path),
                         callbacks=[_StopAtOnce()], limit_val_batches=0)
    trainer.fit(capped, datamodule=dm)
    assert trainer.current_epoch == 3 and trainer.fit_loop.min_epochs == 3


class _StopOnce(pl.Callback):
    """Early stopping whose patience runs out at the first validation and is restored by an
    improvement at the second (it asks once and never again)."""

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == 0:
            trainer.should_stop = True


def test_a_stop_asked_before_the_anneal_end_is_withdrawn_if_not_asked_again(tiny_config, tmp_path):
    # Lightning alone would keep should_stop and end the run at min_epochs (the anneal's end),
    # although nothing asked to stop since the first epoch
    dm = RecBoleDataModule("tiny", config_dict=tiny_config, train_batch_size=32)
    model = MVAE(anneal_cap=0.2, anneal_epochs=4.5)
    trainer = pl.Trainer(max_epochs=8, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, default_root_dir=str(tmp_path),
                         callbacks=[_StopOnce()], limit_val_batches=0)
    trainer.fit(model, datamodule=dm)
    assert trainer.fit_loop.min_epochs == 5 and trainer.current_epoch == 8


class _AskAt(pl.Callback):
    """Early stopping whose patience is spent: it asks to stop at the end of each epoch listed (an
    epoch not listed is an improvement: it does not ask)."""

    def __init__(self, epochs):
        self.epochs = set(epochs)

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch in self.epochs:
            trainer.should_stop = True


def _fit_with(model, dm, tmp_path, callback, max_epochs=20, validate=False, **trainer_args):
    trainer = pl.Trainer(max_epochs=max_epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, default_root_dir=str(tmp_path),
                         callbacks=[callback], limit_val_batches=1.0 if validate else 0, num_sanity_val_steps=0,
                         **trainer_args)
    trainer.fit(model, datamodule=dm)
    return trainer


@pytest.mark.parametrize("patience, expected", [(None, 8), (2, 3), (0, 1)])
def test_anneal_patience_takes_the_request_after_that_many_refused_in_a_row(tiny_config, tmp_path, patience,
                                                                            expected):
    # asked at every epoch's end: refused after epochs 0 and 1 (patience 2), taken after epoch 2
    dm = RecBoleDataModule("tiny", config_dict=tiny_config, train_batch_size=32)
    model = MVAE(anneal_cap=0.2, anneal_epochs=8.0, anneal_patience=patience)
    trainer = _fit_with(model, dm, tmp_path, _AskAt(range(100)))
    assert trainer.current_epoch == expected


def test_anneal_patience_counts_requests_in_a_row_and_an_improvement_resets_it(tiny_config, tmp_path):
    # asks after epochs 0, 1; epoch 2 validates without asking (an improvement); asks again from epoch 3:
    # refused after 3 and 4, taken after 5.  Without the reset the run would end after epoch 3.
    dm = RecBoleDataModule("tiny", config_dict=tiny_config, train_batch_size=32)
    model = MVAE(anneal_cap=0.2, anneal_epochs=10.0, anneal_patience=2)
    trainer = _fit_with(model, dm, tmp_path, _AskAt([0, 1, *range(3, 100)]), validate=True)
    assert trainer.current_epoch == 6
    # an epoch that does not validate is no improvement: with validation off the count carries over epoch 2
    model = MVAE(anneal_cap=0.2, anneal_epochs=10.0, anneal_patience=2)
    trainer = _fit_with(model, dm, tmp_path, _AskAt([0, 1, *range(3, 100)]), validate=False)
    assert trainer.current_epoch == 4


class _ScriptedRecBoleLog(_RecBoleLog):
    """The RecBole entry point's stopping rule (RecBole's ``early_stopping``), fed a scripted curve."""

    def __init__(self, curve, stopping_step):
        owner = SimpleNamespace(valid_log=[], epoch_seconds=[], logger=logging.getLogger("scripted"))
        super().__init__(owner, "valid/scripted", True, stopping_step, verbose=False)
        self.curve, self.validations = curve, 0

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            trainer.callback_metrics["valid/scripted"] = torch.tensor(self.curve[self.validations])
            self.validations += 1
        super().on_validation_end(trainer, pl_module)


FLAT = [0.9] + [0.5] * 200                       # best at the first validation, never better
LATE = [0.5] + [0.4] * 6 + [0.6] + [0.3] * 100   # 6 without improvement, then a better one


@pytest.mark.parametrize("curve, stopping_step, patience", [(FLAT, 1, 2), (FLAT, 2, 3), (FLAT, 0, 0), (LATE, 1, 2),
                                                            (LATE, 1, 5)])
def test_anneal_patience_through_recboles_rule_ends_where_the_benchmark_replay_does(tiny_config, tmp_path, curve,
                                                                                    stopping_step, patience):
    # the rule mvae_defaults.py replays on recorded curves (after-anneal-cutN: N = stopping_step + patience),
    # here in training: with RecBole's stopping_step 10 the default 40 ends a run after 51 validations
    # without improvement
    from mvae_defaults import replay

    dm = RecBoleDataModule("tiny", config_dict=tiny_config, train_batch_size=32)
    log = _ScriptedRecBoleLog(curve, stopping_step)
    trainer = _fit_with(MVAE(anneal_cap=0.2, anneal_epochs=40.0, anneal_patience=patience, anneal_restarts=0), dm,
                        tmp_path, log, max_epochs=60, validate=True)
    _, epochs = replay(curve, f"after-anneal-cut{stopping_step + patience}", stopping_step, 40)
    assert trainer.current_epoch == log.validations == epochs


def test_anneal_patience_counts_validations_when_not_every_epoch_validates(tiny_config, tmp_path):
    dm = RecBoleDataModule("tiny", config_dict=tiny_config, train_batch_size=32)
    log = _ScriptedRecBoleLog(FLAT, 1)
    trainer = _fit_with(MVAE(anneal_cap=0.2, anneal_epochs=40.0, anneal_patience=2, anneal_restarts=0), dm, tmp_path,
                        log, max_epochs=60, validate=True, check_val_every_n_epoch=2)
    assert log.validations == 5 and trainer.current_epoch == 10     # the same 5 validations, two epochs each


def test_anneal_patience_keeps_the_users_own_min_epochs(tiny_config, tmp_path):
    dm = RecBoleDataModule("tiny", config_dict=tiny_config, train_batch_size=32)
    trainer = _fit_with(MVAE(anneal_cap=0.2, anneal_epochs=40.0, anneal_patience=2, anneal_restarts=0), dm, tmp_path,
                        _ScriptedRecBoleLog(FLAT, 1), max_epochs=60, validate=True, min_epochs=30)
    assert trainer.current_epoch == 30


def test_anneal_patience_count_survives_resume(tiny_config, tmp_path):
    # Lightning's own EarlyStopping (it asks at the epoch's end, after the module's hook); checkpoints every
    # epoch; a run resumed from any of them ends where the uninterrupted run ended
    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

    class Inject(pl.Callback):
        def on_validation_end(self, trainer, pl_module):
            if not trainer.sanity_checking:
                trainer.callback_metrics["scripted"] = torch.tensor(FLAT[trainer.current_epoch])

    def trainer(root, *extra):
        return pl.Trainer(max_epochs=60, accelerator="cpu", logger=False, enable_progress_bar=False,
                          enable_model_summary=False, default_root_dir=str(root), num_sanity_val_steps=0,
                          callbacks=[Inject(), EarlyStopping("scripted", patience=1, mode="max"), *extra])

    dm = RecBoleDataModule("tiny", config_dict=tiny_config, train_batch_size=32)
    ckpts = tmp_path / "ck"
    whole = trainer(tmp_path / "a", ModelCheckpoint(dirpath=str(ckpts), save_top_k=-1, filename="{epoch}"))
    whole.fit(MVAE(anneal_cap=0.2, anneal_epochs=40.0, anneal_patience=2), datamodule=dm)
    assert whole.current_epoch == 4
    for epoch in (1, 2):
        resumed = trainer(tmp_path / f"b{epoch}")
        resumed.fit(MVAE(anneal_cap=0.2, anneal_epochs=40.0, anneal_patience=2), datamodule=dm,
                    ckpt_path=str(ckpts / f"epoch={epoch}.ckpt"))
        assert resumed.current_epoch == whole.current_epoch, epoch


class _RecordEpochStarts(pl.Callback):
    """At each epoch's first minibatch: the step size, Adam's step count of the first parameter, and
    whether the weights equal the best epoch's the stopping rule keeps (``log``)."""

    def __init__(self, log):
        self.keeper, self.lr, self.adam_steps, self.at_best = log, {}, {}, {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx:
            return
        epoch, optimizer = trainer.current_epoch, trainer.optimizers[0]
        self.lr[epoch] = optimizer.param_groups[0]["lr"]
        state = optimizer.state.get(optimizer.param_groups[0]["params"][0], {})
        self.adam_steps[epoch] = int(state["step"]) if "step" in state else 0
        best = self.keeper.best_state
        self.at_best[epoch] = best is not None and all(torch.equal(v, best[k]) for k, v in
                                                       pl_module.state_dict().items())


def _fit_recording(model, dm, tmp_path, log, **trainer_args):
    record = _RecordEpochStarts(log)
    trainer = pl.Trainer(max_epochs=60, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, default_root_dir=str(tmp_path),
                         callbacks=[log, record], num_sanity_val_steps=0, **trainer_args)
    trainer.fit(model, datamodule=dm)
    return trainer, record


def test_anneal_restarts_go_back_to_the_best_epoch_with_a_smaller_step_before_the_stop(tiny_config, tmp_path):
    # FLAT with stopping_step 1, patience 2: requests at the ends of epochs 2, 3, ...; the 2nd refusal (start of
    # epoch 4) ends the wait, and the request after epoch 4 is taken (5 epochs).  With 2 restarts the run
    # restarts there and at epoch 6's start (2 more refusals); the stop is taken 2 refusals later: 9 epochs.
    dm = RecBoleDataModule("tiny", config_dict=tiny_config, train_batch_size=32)   # 60 users: 2 steps an epoch
    log = _ScriptedRecBoleLog(FLAT, 1)
    trainer, record = _fit_recording(MVAE(anneal_cap=0.2, anneal_epochs=40.0, anneal_patience=2, anneal_restarts=2,
                                          learning_rate=1e-3), dm, tmp_path, log)
    assert trainer.current_epoch == 9 and log.best_epoch == 0
    assert record.lr == pytest.approx({0: 1e-3, 1: 1e-3, 2: 1e-3, 3: 1e-3, 4: 5e-4, 5: 5e-4, 6: 2.5e-4, 7: 2.5e-4,
                                       8: 2.5e-4})
    # at each restart: the best epoch's weights and Adam state (2 steps after epoch 0), then training moves on
    assert [e for e, same in record.at_best.items() if same] == [1, 4, 6]      # 1: right after the best epoch
    assert record.adam_steps[4] == record.adam_steps[6] == 2 and record.adam_steps[5] == 4
    assert trainer.lightning_module._restarts == 2


def test_anneal_restarts_an_improvement_after_a_restart_resets_the_count(tiny_config, tmp_path):
    # a restart at epoch 4's start (as above); validation improves at epoch 5 (0.95 > 0.9): the count starts
    # again from there, the next restart goes back to epoch 5, not 0
    curve = [0.9, 0.5, 0.5, 0.5, 0.5, 0.95] + [0.5] * 100
    dm = RecBoleDataModule("tiny", config_dict=tiny_config, train_batch_size=32)
    log = _ScriptedRecBoleLog(curve, 1)
    trainer, record = _fit_recording(MVAE(anneal_cap=0.2, anneal_epochs=40.0, anneal_patience=2, anneal_restarts=2),
                                     dm, tmp_path, log)
    assert log.best_epoch == 5
    # requests after epochs 7, 8 (stopping_step 1); refusals at the starts of 8, 9: the 2nd restart, to epoch 5's
    # weights; refusals at 10, 11 end the wait, the request after epoch 11 is taken
    assert [e for e, same in record.at_best.items() if same] == [1, 4, 6, 9]
    assert record.lr[8] == pytest.approx(5e-4) and record.lr[9] == pytest.approx(2.5e-4)
    assert trainer.current_epoch == 12


def test_anneal_restarts_none_or_no_best_known_take_the_stop(tiny_config, tmp_path):
    dm = RecBoleDataModule("tiny", config_dict=tiny_config, train_batch_size=32)
    log = _ScriptedRecBoleLog(FLAT, 1)
    trainer, record = _fit_recording(MVAE(anneal_cap=0.2, anneal_epochs=40.0, anneal_patience=2, anneal_restarts=0),
                                     dm, tmp_path, log)
    assert trainer.current_epoch == 5 and set(record.lr.values()) == {1e-3}
    assert log.best_optimizer_states is None           # not kept for a model that does not restart
    # a rule that keeps no best epoch (and no monitoring checkpoint): the stop is taken as without restarts
    trainer = _fit_with(MVAE(anneal_cap=0.2, anneal_epochs=8.0, anneal_patience=2), dm, tmp_path, _AskAt(range(100)))
    assert trainer.current_epoch == 3
    # anneal_patience 0: the first request is taken, and no epoch restarts before it (the count is 0 >= 0); the
    # best epoch's Adam state is kept only for restarts after the cap
    for after_cap in (False, True):
        log = _ScriptedRecBoleLog(FLAT, 1)
        trainer, record = _fit_recording(MVAE(anneal_cap=0.2, anneal_epochs=40.0, anneal_patience=0,
                                              restart_after_cap=after_cap), dm, tmp_path, log)
        assert trainer.current_epoch == 3 and set(record.lr.values()) == {1e-3}
        assert (log.best_optimizer_states is None) == (not after_cap)


def test_anneal_restarts_from_a_monitoring_checkpoint_in_a_lightning_script(tiny_config, tmp_path):
    # Lightning's EarlyStopping and ModelCheckpoint(monitor=...): the restart reads the best file; a resumed
    # run keeps the number of restarts done and ends where the uninterrupted run ended
    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

    class Inject(pl.Callback):
        def on_validation_end(self, trainer, pl_module):
            if not trainer.sanity_checking:
                trainer.callback_metrics["scripted"] = torch.tensor(FLAT[trainer.current_epoch])

    class Lr(pl.Callback):
        """The step size and the weights at each epoch's first minibatch."""

        def __init__(self):
            self.lr, self.weights = {}, {}

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 0:
                self.lr[trainer.current_epoch] = trainer.optimizers[0].param_groups[0]["lr"]
                self.weights[trainer.current_epoch] = {k: v.clone() for k, v in pl_module.state_dict().items()}

    def trainer(root, ckpts, *extra):
        return pl.Trainer(max_epochs=60, accelerator="cpu", logger=False, enable_progress_bar=False,
                          enable_model_summary=False, default_root_dir=str(root), num_sanity_val_steps=0,
                          callbacks=[Inject(), EarlyStopping("scripted", patience=1, mode="max"),
                                     ModelCheckpoint(dirpath=str(ckpts), monitor="scripted", mode="max",
                                                     save_top_k=-1, filename="{epoch}"), *extra])

    dm = RecBoleDataModule("tiny", config_dict=tiny_config, train_batch_size=32)
    lr = Lr()
    whole = trainer(tmp_path / "a", tmp_path / "ck", lr)
    model = MVAE(anneal_cap=0.2, anneal_epochs=40.0, anneal_patience=2, anneal_restarts=1)
    whole.fit(model, datamodule=dm)
    assert model._restarts == 1 and whole.current_epoch == 6          # the cut's 4 + one restart's 2
    assert lr.lr == pytest.approx({0: 1e-3, 1: 1e-3, 2: 1e-3, 3: 5e-4, 4: 5e-4, 5: 5e-4})
    # the restart (epoch 3's start) went back to the best file's weights (epoch 0: FLAT's best), and Adam's
    best = torch.load(str(tmp_path / "ck" / "epoch=0.ckpt"), weights_only=False)
    assert all(torch.equal(v, best["state_dict"][k]) for k, v in lr.weights[3].items())
    assert not all(torch.equal(v, best["state_dict"][k]) for k, v in lr.weights[2].items())
    for epoch in (1, 4):   # resumed from a copy of the run's folder as it was at that epoch
        ckpts = tmp_path / f"ck{epoch}"
        shutil.copytree(tmp_path / "ck", ckpts)
        for later in range(epoch + 1, 10):
            (ckpts / f"epoch={later}.ckpt").unlink(missing_ok=True)
        resumed = trainer(tmp_path / f"b{epoch}", ckpts)
        again = MVAE(anneal_cap=0.2, anneal_epochs=40.0, anneal_patience=2, anneal_restarts=1)
        resumed.fit(again, datamodule=dm, ckpt_path=str(ckpts / f"epoch={epoch}.ckpt"))
        assert resumed.current_epoch == whole.current_epoch and again._restarts == 1, epoch


PEAK_AT_CAP = [0.1, 0.2, 0.3, 0.9] + [0.5] * 100   # improves until beta's cap (epoch 4), then a plateau


@pytest.mark.parametrize("after_cap, epochs", [(False, 6), (True, 10)])
def test_restart_after_cap_answers_the_stop_after_beta_s_cap_with_a_restart(tiny_config, tmp_path, after_cap,
                                                                            epochs):
    # stopping_step 1: requests at the ends of epochs 5, 7, 9 (RecBole's count starts again at each restart).
    # Without restart_after_cap the first ends the run (6 epochs); with it the first two restart the run at the
    # next epoch's start (6, 8) from epoch 3's weights with half the step each time, and the third is taken
    from mvae_defaults import restarts_as_trained

    dm = RecBoleDataModule("tiny", config_dict=tiny_config, train_batch_size=32)
    log = _ScriptedRecBoleLog(PEAK_AT_CAP, 1)
    trainer, record = _fit_recording(MVAE(anneal_cap=0.2, anneal_epochs=4.0, anneal_restarts=2,
                                          restart_after_cap=after_cap, learning_rate=1e-3), dm, tmp_path, log)
    assert trainer.current_epoch == log.validations == epochs and log.best_epoch == 3
    if after_cap:
        assert record.lr == pytest.approx({**{e: 1e-3 for e in range(6)}, 6: 5e-4, 7: 5e-4, 8: 2.5e-4, 9: 2.5e-4})
        assert [e for e, same in record.at_best.items() if same] == [1, 2, 3, 4, 6, 8]
        assert record.adam_steps[6] == record.adam_steps[8] == 8          # epoch 3's Adam state (4 epochs x 2)
        assert trainer.lightning_module._restarts == 2
        # the benchmark's replay of a probe curve stops where training does (the scripted curve is what
        # validation read, restarts included)
        assert restarts_as_trained(PEAK_AT_CAP, 4, 51, 2, stopping_step=1) == (0.9, epochs)


def test_restart_after_cap_holds_a_request_made_as_beta_reaches_its_cap(tiny_config, tmp_path):
    # FLAT, stopping_step 1, no cut before the cap (anneal_patience unset): requests from epoch 2's end; the
    # one at epoch 3's end (beta reaches its cap there) is the first that could end the run; with
    # restart_after_cap it restarts the run at epoch 4's start, and at 6's (after 2 more validations)
    dm = RecBoleDataModule("tiny", config_dict=tiny_config, train_batch_size=32)
    for after_cap, epochs, restarts in ((False, 4, 0), (True, 8, 2)):
        log = _ScriptedRecBoleLog(FLAT, 1)
        trainer, record = _fit_recording(MVAE(anneal_cap=0.2, anneal_epochs=4.0, anneal_patience=None,
                                              anneal_restarts=2, restart_after_cap=after_cap), dm, tmp_path, log)
        assert trainer.current_epoch == epochs and trainer.lightning_module._restarts == restarts
        assert [e for e, same in record.at_best.items() if same] == ([1, 4, 6] if after_cap else [1])


def test_restart_after_cap_takes_a_request_that_is_not_a_plateau_s(tiny_config, tmp_path):
    # validation always improves (no plateau request); a request from elsewhere (a Timer, say) at epoch 6's end
    # is held back one epoch for a possible restart, then taken: the run ends after epoch 7, without a restart.
    # With nothing that keeps a best epoch (no keeper, no monitoring checkpoint) nothing is held: the plateau's
    # request as beta reaches its cap (epoch 3's end) ends the run, as without the setting
    rising = [0.01 * e for e in range(100)]

    class AskOnce(_ScriptedRecBoleLog):
        def on_train_epoch_end(self, trainer, pl_module):
            super().on_train_epoch_end(trainer, pl_module)
            if trainer.current_epoch == 6:
                trainer.should_stop = True

    dm = RecBoleDataModule("tiny", config_dict=tiny_config, train_batch_size=32)
    log = AskOnce(rising, 1)
    trainer, record = _fit_recording(MVAE(anneal_cap=0.2, anneal_epochs=4.0, anneal_restarts=2,
                                          restart_after_cap=True), dm, tmp_path, log)
    assert trainer.current_epoch == 8 and trainer.lightning_module._restarts == 0
    assert set(record.lr.values()) == {1e-3}
    class PlateauAt(_AskAt):                 # a plateau's request, but no best epoch kept anywhere
        def plateau_request(self):
            return True

    model = MVAE(anneal_cap=0.2, anneal_epochs=4.0, anneal_patience=None, anneal_restarts=2, restart_after_cap=True)
    trainer = _fit_with(model, dm, tmp_path, PlateauAt(range(100)))
    assert trainer.current_epoch == 4 and model._restarts == 0

    class KeeperWithoutBest(PlateauAt):      # keeps a best epoch in general, knows none here: taken one epoch late
        def restart_state(self):
            return None

    model = MVAE(anneal_cap=0.2, anneal_epochs=4.0, anneal_patience=None, anneal_restarts=2, restart_after_cap=True)
    trainer = _fit_with(model, dm, tmp_path, KeeperWithoutBest(range(100)))
    assert trainer.current_epoch == 5 and model._restarts == 0 and model._no_restart_source


def _whole_and_resumed(tiny_config, tmp_path, curve, patience, settings, resume_from):
    """A Lightning script (EarlyStopping with ``patience`` on the scripted ``curve``, a monitoring
    ModelCheckpoint keeping every epoch's file) run whole, then resumed from a copy of its folder as it was
    at each epoch of ``resume_from``; each resumed run must end where the whole run ended, with as many
    restarts.  Returns the whole run's trainer and model."""
    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

    class Inject(pl.Callback):
        def on_validation_end(self, trainer, pl_module):
            if not trainer.sanity_checking:
                trainer.callback_metrics["scripted"] = torch.tensor(curve[trainer.current_epoch])

    def trainer(root, ckpts):
        return pl.Trainer(max_epochs=60, accelerator="cpu", logger=False, enable_progress_bar=False,
                          enable_model_summary=False, default_root_dir=str(root), num_sanity_val_steps=0,
                          callbacks=[Inject(), EarlyStopping("scripted", patience=patience, mode="max"),
                                     ModelCheckpoint(dirpath=str(ckpts), monitor="scripted", mode="max",
                                                     save_top_k=-1, filename="{epoch}")])

    dm = RecBoleDataModule("tiny", config_dict=tiny_config, train_batch_size=32)
    whole, first = trainer(tmp_path / "a", tmp_path / "ck"), MVAE(**settings)
    whole.fit(first, datamodule=dm)
    for epoch in resume_from:
        ckpts = tmp_path / f"ck{epoch}"
        shutil.copytree(tmp_path / "ck", ckpts)
        for later in range(epoch + 1, 60):
            (ckpts / f"epoch={later}.ckpt").unlink(missing_ok=True)
        resumed, again = trainer(tmp_path / f"b{epoch}", ckpts), MVAE(**settings)
        resumed.fit(again, datamodule=dm, ckpt_path=str(ckpts / f"epoch={epoch}.ckpt"))
        assert resumed.current_epoch == whole.current_epoch and again._restarts == first._restarts, epoch
    return whole, first


def test_restart_after_cap_with_lightning_s_early_stopping_and_a_monitoring_checkpoint(tiny_config, tmp_path):
    # EarlyStopping (patience 2, checked at the epoch's end) asks at the ends of epochs 5, 7, 9 (its count
    # starts again at each restart); the first two restart the run from the best file (epoch 3); runs resumed
    # from the files of epochs 4 to 8 (5 and 7: a request held back when the file was written) end where the
    # whole run ends, with the same restarts
    settings = dict(anneal_cap=0.2, anneal_epochs=4.0, anneal_restarts=2, restart_after_cap=True)
    whole, first = _whole_and_resumed(tiny_config, tmp_path, PEAK_AT_CAP, 2, settings, range(4, 9))
    assert whole.current_epoch == 10 and first._restarts == 2
    assert first.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(2.5e-4)


def test_restart_after_cap_resumed_from_the_anneal_s_last_epoch_counts_its_request_once(tiny_config, tmp_path):
    # EarlyStopping (patience 1) on FLAT asks from epoch 1's end; anneal_patience 3: the cut's restart at epoch 4's
    # start would come at the 3rd refusal, but epoch 4 is beta's cap, where the request held at epoch 3's end
    # restarts the run instead (once, not also as a refusal); runs resumed from every epoch but the last end where
    # the whole run ends (from the last, Lightning runs one more epoch: the stop itself is not saved)
    settings = dict(anneal_cap=0.2, anneal_epochs=4.0, anneal_patience=3, anneal_restarts=2, restart_after_cap=True)
    whole, first = _whole_and_resumed(tiny_config, tmp_path, FLAT, 1, settings, range(1, 5))
    assert whole.current_epoch == 6 and first._restarts == 2
    saved = torch.load(str(tmp_path / "ck" / "epoch=3.ckpt"), weights_only=False)
    assert saved["anneal_refused"] == 2 and saved["restart_pending"]


def test_the_annealing_settings_are_declared_once():
    # every model with an annealing setting takes the one declaration (lightning_genrec.models.base): the same
    # kind, meaning and range everywhere, only the default (and whether it may be unset) its authors' own
    from lightning_genrec import MODELS
    from lightning_genrec.models import base

    shared = {h.name: h for h in (base.ANNEAL_CAP, base.TOTAL_ANNEAL_STEPS, base.ANNEAL_SCHEDULE)}
    seen = set()
    for name, cls in MODELS.items():
        for h in cls.HYPERPARAMETERS:
            if h.name in shared:
                s = shared[h.name]
                assert (h.kind, h.meaning, h.low, h.high, h.choices) == (s.kind, s.meaning, s.low, s.high, s.choices)
                seen.add((name, h.name))
    assert {m for m, _ in seen} == {"MVAE", "SVAE", "CVAE"} and len(seen) == 9
    defaults = {n: {h.name: h.default for h in MODELS[n].HYPERPARAMETERS if h.name in shared} for n in ("MVAE", "SVAE", "CVAE")}
    assert defaults == {"MVAE": {"anneal_cap": 1.0, "total_anneal_steps": None, "anneal_schedule": "linear"},
                        "SVAE": {"anneal_cap": 0.2, "total_anneal_steps": 200000, "anneal_schedule": "linear"},
                        "CVAE": {"anneal_cap": 1.0, "total_anneal_steps": 0, "anneal_schedule": "constant"}}
