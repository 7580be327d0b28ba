"""The contract every registered model meets; a new model gets all of it by being in ``MODELS``.

Finite loss on a one-batch fit, a checkpoint that loads back to identical scores, the same test metrics
through RecBole's ``run_recbole`` and through a Lightning ``Trainer``, every invalid hyperparameter refused
by name (from the model's own declaration), and the command line's one-line errors.  Model files keep only
what is specific to their paper.
"""
import json
import math
import os
import subprocess
import sys

import pytest
import pytorch_lightning as pl
import torch

import recbole_ext
from lightning_genrec import MODELS, HyperparameterError
from lightning_genrec.models.gan import RoundGAN
from recbole_ext import RecBoleDataModule
from recbole_ext.__main__ import main as command_line
from recbole_ext.config import make_config

from conftest import SMALL, TINY_SETTINGS, assert_entry_points_agree, small_config

HERE = os.path.dirname(os.path.abspath(__file__))
NAMES = sorted(MODELS)
GANS = [n for n in NAMES if issubclass(MODELS[n], RoundGAN)]


def _datamodule(name, tiny_config, **extra):
    dm = RecBoleDataModule("tiny", model=name, config_dict=small_config(name, tiny_config, **extra))
    dm.setup()
    return dm


def _model(name, dm):
    model = MODELS[name](**SMALL.get(name, {}))
    model.attach_data(dm.data)
    return model


def _trainer(tmp_path, **kw):
    return pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                      enable_checkpointing=False, default_root_dir=str(tmp_path), **kw)


def _test_batch(dm):
    users = dm.data.split("test").users[:5]
    return dm.data.rows(users, "test")


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
@pytest.mark.parametrize("name", NAMES)
def test_one_batch_fit_has_a_finite_loss_and_moves_the_weights(name, tiny_config, tmp_path, precision):
    # bf16-mixed: Lightning's autocast, here on the CPU (the setting GPU users train with)
    dm = _datamodule(name, tiny_config)
    model = _model(name, dm)
    before = [p.detach().clone() for p in model.parameters()]
    _trainer(tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=1, precision=precision).fit(
        model, datamodule=dm)
    assert math.isfinite(float(model.trainer.callback_metrics["train/loss_epoch"]))
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


@pytest.mark.parametrize("name", NAMES)
def test_every_optimizer_is_the_fused_adam_on_cpu(name, tiny_config):
    model = _model(name, _datamodule(name, tiny_config))
    optimizers = model.configure_optimizers()
    optimizers = list(optimizers) if isinstance(optimizers, (list, tuple)) else [optimizers]
    assert optimizers and all(type(o) is torch.optim.Adam and o.defaults["fused"] for o in optimizers)


def test_the_fused_adam_makes_the_default_adams_updates(monkeypatch):
    from lightning_genrec.models.base import adam

    torch.manual_seed(0)
    ours = [torch.nn.Parameter(torch.randn(30, 7)), torch.nn.Parameter(torch.randn(7))]
    plain = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    start = [p.detach().clone() for p in ours]
    fused, default = adam(ours, lr=1e-2, weight_decay=0.01), torch.optim.Adam(plain, lr=1e-2, weight_decay=0.01)
    assert fused.defaults["fused"] and not default.defaults["fused"]
    for _ in range(50):
        for a, b in zip(ours, plain):
            a.grad = torch.randn_like(a)
            b.grad = a.grad.clone()
        fused.step()
        default.step()
    moved = max((a - b).abs().max().item() for a, b in zip(ours, plain))
    travelled = min((a.detach() - s).abs().max().item() for a, s in zip(ours, start))
    assert moved < 1e-5 and travelled > 0.1           # rounding apart, the same 50 steps (and they did move)
    # parameters on a device without a fused kernel, or a torch without one, get the default Adam
    assert not adam([torch.nn.Parameter(torch.empty(3, device="meta"))], lr=1e-3).defaults["fused"]
    real_adam = torch.optim.Adam

    def no_fused_kernel(*args, fused=None, **kwargs):
        if fused:
            raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of supported devices")
        return real_adam(*args, **kwargs)

    monkeypatch.setattr(torch.optim, "Adam", no_fused_kernel)
    assert not adam([torch.nn.Parameter(torch.zeros(3))], lr=1e-3).defaults["fused"]


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_round_trip_gives_identical_scores_and_metrics(name, tiny_config, tmp_path):
    dm = _datamodule(name, tiny_config)
    model = _model(name, dm)
    trainer = _trainer(tmp_path, max_epochs=2)
    trainer.fit(model, datamodule=dm)
    path = str(tmp_path / "model.ckpt")
    trainer.save_checkpoint(path)
    loaded = MODELS[name].load_from_checkpoint(path)
    assert dict(loaded.hparams) == dict(model.hparams)
    loaded.attach_data(dm.data)
    model.eval(), loaded.eval()
    with torch.no_grad():
        assert torch.equal(model.score(_test_batch(dm)), loaded.score(_test_batch(dm)))   # the same arithmetic
    a = _trainer(tmp_path).test(model, datamodule=dm, verbose=False)[0]
    b = _trainer(tmp_path).test(loaded, datamodule=dm, verbose=False)[0]
    assert a == pytest.approx(b, abs=1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_both_entry_points_give_the_same_numbers(name, tiny_config):
    cfg = small_config(name, tiny_config, epochs=2)
    result = recbole_ext.run_recbole(model=name, dataset="tiny", config_dict=cfg)
    dm = RecBoleDataModule("tiny", model=name, config_dict=cfg)
    dm.setup()
    assert_entry_points_agree(result, _model(name, dm), dm)


INVALID = [(name, h.name, value) for name in NAMES for h in MODELS[name].HYPERPARAMETERS
           for value in h.invalid_examples()]


@pytest.mark.parametrize("name, key, value", INVALID, ids=[f"{n}-{k}={v!r}" for n, k, v in INVALID])
def test_invalid_hyperparameters_are_named(name, key, value):
    with pytest.raises(HyperparameterError, match=f"invalid hyperparameter {key}="):
        MODELS[name](**{key: value})


@pytest.mark.parametrize("name", NAMES)
def test_unknown_hyperparameters_are_named_with_the_closest_one(name):
    first = next(h.name for h in MODELS[name].HYPERPARAMETERS if not h.from_data)
    typo = first[:-1] + ("x" if first[-1] != "x" else "y")
    with pytest.raises(HyperparameterError, match=f"no hyperparameter '{typo}' \\(did you mean '{first}'\\?\\)"):
        MODELS[name](**{typo: 1})


@pytest.mark.parametrize("name", NAMES)
def test_invalid_hyperparameters_are_refused_before_recbole_loads_data(name, tiny_config, monkeypatch):
    import recbole.data.dataset.dataset as dataset_module

    h = next(h for h in MODELS[name].HYPERPARAMETERS if h.kind in ("int", "float") and not h.from_data)
    monkeypatch.setattr(dataset_module.Dataset, "__init__", lambda *a, **k: pytest.fail("the data set was loaded"))
    with pytest.raises(HyperparameterError, match=f"invalid hyperparameter {h.name}='abc': must be"):
        make_config(name, "tiny", config_dict=small_config(name, tiny_config, **{h.name: "abc"}))


def _flags(name, leave_out=()):
    """The model's SMALL and TINY_SETTINGS as command-line flags (not topk: the default valid_metric needs @20)."""
    settings = {**SMALL.get(name, {}), **TINY_SETTINGS.get(name, {})}
    return [f"--{k}={v}".replace(" ", "") for k, v in settings.items() if k not in ("topk", *leave_out)]


@pytest.mark.parametrize("name", NAMES)
def test_command_line_errors_are_one_line(name, tiny_root, monkeypatch, capsys):
    h = next(h for h in MODELS[name].HYPERPARAMETERS if h.kind in ("int", "float") and not h.from_data)
    monkeypatch.setattr(sys, "argv", ["lightning-genrec", f"--model={name}", "--dataset=tiny",
                                      f"--data_path={tiny_root}", "--comet=False", *_flags(name, [h.name]),
                                      f"--{h.name}=abc"])
    assert command_line() == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{h.name}='abc'" in err and "Traceback" not in err


@pytest.mark.parametrize("name", GANS)
def test_gan_collapse_on_the_command_line_is_one_line(name, tiny_root, tmp_path):
    out = subprocess.run([sys.executable, "-m", "recbole_ext", f"--model={name}", "--dataset=tiny",
                          f"--data_path={tiny_root}", "--comet=False", "--collapse_d_loss=100",
                          "--collapse_patience=1", "--epochs=3", *_flags(name)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and f"{name} collapsed" in out.stderr and "Traceback" not in out.stderr


def test_recbole_checkpoints_evaluate_again_in_a_fresh_process(tiny_config, tmp_path):
    results = {}
    for name in NAMES:
        result = recbole_ext.run_recbole(model=name, dataset="tiny", config_dict=small_config(name, tiny_config,
                                                                                            epochs=2))
        results[result["saved_model_file"]] = result["test_result"]
    out = tmp_path / "again.json"
    proc = subprocess.run([sys.executable, os.path.join(HERE, "scripts", "evaluate_checkpoints.py"), str(out),
                           *results], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads(out.read_text())
    for path, test in results.items():
        assert again[path] == pytest.approx({k: float(v) for k, v in test.items()}, abs=1e-4), path  # 4 places


def test_numpy_numbers_are_accepted_as_python_ones():
    import numpy as np

    model = MODELS["MVAE"](learning_rate=np.float32(1e-3), latent_dimension=np.int64(8), topk=[np.int64(5)])
    assert type(model.hparams.latent_dimension) is int and model.hparams.topk == [5]


def test_a_subclass_with_its_own_declaration_shows_its_own_signature():
    import inspect

    class Smaller(MODELS["MVAE"]):
        """A narrower MVAE."""
        HYPERPARAMETERS = MODELS["MVAE"].HYPERPARAMETERS[:3]

    assert list(inspect.signature(Smaller).parameters) == [h.name for h in Smaller.HYPERPARAMETERS]
    assert "Args:" in Smaller.__doc__ and "learning_rate" not in Smaller.__doc__
