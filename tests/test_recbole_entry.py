"""RecBole's entry point: run_recbole, YAML defaults, command line, checkpoints, errors, and
the same numbers as a Lightning script."""
import glob
import os
import subprocess
import sys

import pytest
import torch

import recbole_ext
from lightning_genrec import MVAE
from lightning_genrec.errors import DatasetNotFoundError
from recbole_ext.config import ConfigError, UnknownModelError, make_config
from recbole_ext.model_files import config_path
from lightning_genrec.errors import HyperparameterError


NEW_KEYS = {"novelty@5", "novelty@10", "itemcoverage@5", "itemcoverage@10", "giniindex@5", "giniindex@10"}


def test_recbole_own_run_recbole_trains_mvae_with_lightning(tiny_config):
    from recbole.quick_start import load_data_and_model, run_recbole

    result = run_recbole(model="MVAE", dataset="tiny", config_dict=tiny_config)
    test = result["test_result"]
    assert NEW_KEYS | {"ndcg@10", "recall@10", "mrr@10", "precision@10"} <= set(test)
    assert 0 < test["ndcg@10"] <= 1 and 0 < test["itemcoverage@10"] <= 1
    assert result["best_valid_score"] == result["best_valid_result"]["ndcg@10"]
    # the RecBole checkpoint loads back into the same model
    path = sorted(glob.glob("saved/MVAE-*.pth"))[-1]
    config, model, _, train_data, _, test_data = load_data_and_model(path)
    assert type(model).__name__ == "MVAE" and isinstance(model.module, MVAE)
    from recbole.utils import get_trainer

    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    trainer.eval_collector.data_collect(train_data)  # popularity for Novelty, as RecBole's fit does
    again = trainer.evaluate(test_data, load_best_model=False)
    assert again == pytest.approx(test, abs=1e-4)


def test_yaml_defaults_reach_the_model_and_are_overridable(tiny_config):
    config = make_config("MVAE", "tiny", config_dict=tiny_config)
    assert config["latent_dimension"] == 64 and config["anneal_cap"] == 1.0
    assert config["train_neg_sample_args"]["sample_num"] == "none" or not config["train_neg_sample_args"].get(
        "sample_num")
    config = make_config("MVAE", "tiny", config_dict=dict(tiny_config, latent_dimension=17))
    from recbole_ext.config import load_data
    from recbole_ext.registry import adapter_class

    _, train, _, _ = load_data(config)
    model = adapter_class("MVAE")(config, train._dataset)
    assert model.module.hparams.latent_dimension == 17
    assert model.module.net.decoder[0].in_features == 17


def test_config_file_override(tiny_config, tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("latent_dimension: 33\nanneal_schedule: constant\n")
    config = make_config("MVAE", "tiny", config_file_list=[str(f)], config_dict=tiny_config)
    assert config["latent_dimension"] == 33 and config["anneal_schedule"] == "constant"


def test_unknown_model_lists_known_models(tiny_config):
    with pytest.raises(UnknownModelError) as err:
        recbole_ext.run_recbole(model="MVAEE", dataset="tiny", config_dict=tiny_config)
    message = str(err.value)
    assert "MVAE" in message and "MultiVAE" in message and "Did you mean MVAE" in message


@pytest.mark.parametrize("name, close", [("MVAEE", "MVAE"), ("multivae", "MultiVAE"), ("LightGBN", "LightGCN, LightGBM")])
def test_recboles_own_get_model_names_an_unknown_model(tiny_config, name, close):
    # RecBole's own search falls through to its exlib models and failed importing lightgbm (or, with it,
    # said only that the name is not a model); every one of RecBole's doors gives our error
    from recbole.config import Config
    from recbole.quick_start import run_recbole
    from recbole.utils import get_model

    for call in (lambda: get_model(name), lambda: Config(model=name, dataset="tiny", config_dict=tiny_config),
                 lambda: run_recbole(model=name, dataset="tiny", config_dict=tiny_config)):
        with pytest.raises(UnknownModelError, match=f"unknown model {name!r}. Did you mean {close}") as err:
            call()
        assert "lightning-genrec models: MVAE" in str(err.value) and "RecBole models: ADMMSLIM" in str(err.value)
    assert get_model("MultiVAE").__name__ == "MultiVAE" and get_model("MVAE").__name__ == "MVAE"


@pytest.mark.parametrize("words, named", [
    (["foo", "--checkpoint", "x", "--port", "1"], "did not understand 'foo' '--checkpoint' 'x'"),
    (["--model=MVAE", "--epochs", "20"], "did not understand '--epochs' '20' (did you mean --epochs=20?)"),
    (["hyper", "--model=MVAE", "extra"], "lightning-genrec hyper: error: did not understand 'extra'"),
    (["--data_path=/runs/lr=0.1"], "did not understand '--data_path=/runs/lr=0.1'"),   # RecBole drops it silently
])
def test_words_the_command_line_does_not_understand_are_an_error_not_a_run(monkeypatch, capsys, words, named):
    from recbole_ext.__main__ import main

    def no_run(*args, **kwargs):
        raise AssertionError("a training run started")

    monkeypatch.setattr(recbole_ext, "run", no_run)
    monkeypatch.setattr("recbole_ext.__main__.run_hyper", no_run)
    assert main(words) == 2
    err = capsys.readouterr().err
    assert named in err and "the subcommands are recommend and hyper" in err and err.count("\n") == 1


def test_missing_dataset_and_atomic_files_are_named(tiny_config, tmp_path):
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        make_config("MVAE", "nowhere", config_dict=dict(tiny_config, data_path=str(tmp_path)))
    os.makedirs(tmp_path / "half")
    (tmp_path / "half" / "half.inter").write_text("user_id:token\titem_id:token\nu1\ti1\n")
    with pytest.raises(DatasetNotFoundError, match=r"half\.item"):
        make_config("MVAE", "half", config_dict=dict(tiny_config, data_path=str(tmp_path),
                                                     load_col={"inter": ["user_id", "item_id"],
                                                               "item": ["item_id", "class"]}))


def test_invalid_hyperparameter_fails_before_data_loads(tiny_config):
    with pytest.raises(HyperparameterError, match=r"anneal_cap=-1"):
        make_config("MVAE", "tiny", config_dict=dict(tiny_config, anneal_cap=-1))


def test_default_yaml_is_found():
    assert config_path("MVAE").endswith("mvae.yaml")


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "recbole_ext", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_command_line_in_recbole_style(tiny_root, tmp_path):
    (tmp_path / "a.yaml").write_text("topk: [5, 10]\nvalid_metric: NDCG@10\ntrain_batch_size: 16\n")
    out = _cli("--model=MVAE", "--dataset=tiny", "--config_files=a.yaml", "--epochs=2", f"--data_path={tiny_root}",
               "--comet=False", "--show_progress=False", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ndcg" in out.stdout and "test@10" in out.stdout and "novelty" in out.stdout
    assert "RecBole checkpoint: saved/MVAE-" in out.stdout
    log = open(glob.glob(str(tmp_path / "log" / "MVAE" / "*.log"))[0]).read()
    assert "epoch 1 training" in log and "epoch 2 training" not in log   # --epochs=2 reached the trainer


def test_command_line_error_is_one_clean_line_from_a_real_process(tmp_path):
    out = _cli("--model=NoSuchModel", "--dataset=ml-100k", cwd=tmp_path)
    assert out.returncode == 2
    assert "unknown model 'NoSuchModel'" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("args, named", [
    (["--model=MVAE", "--dataset=ghost", "--data_path={tmp}"], "ghost"),
    (["--model=MVAE", "--dataset=ml-100k", "--config_files=missing.yaml"], "missing.yaml"),
])
def test_command_line_errors_are_one_clean_line(tmp_path, monkeypatch, capsys, args, named):
    # in this process (a fresh one per case costs ~7 s of imports; the case above keeps a real one):
    # main() must return 2 with one line on stderr, where an escaping exception would fail the test
    from recbole_ext.__main__ import main

    args = [a.format(tmp=tmp_path) for a in args]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["lightning-genrec", *args])   # RecBole's Config reads overrides here
    assert main(args) == 2
    err = capsys.readouterr().err
    assert named in err and err.startswith("lightning-genrec: error:") and err.count("\n") == 1


def test_eval_mode_must_be_full(tiny_config):
    with pytest.raises(ConfigError, match="mode: full"):
        make_config("MVAE", "tiny", config_dict=dict(
            tiny_config, eval_args={"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "group_by": "user",
                                    "mode": "uni100"}))


@pytest.mark.parametrize("metric, topk", [("Hit@10", [5, 10]), ("NDCG@20", [5, 10])])
def test_valid_metric_must_be_one_we_compute(tiny_config, metric, topk):
    with pytest.raises(ConfigError, match="valid_metric"):
        make_config("MVAE", "tiny", config_dict=dict(tiny_config, valid_metric=metric, topk=topk))


def test_recbole_config_leaves_visible_devices_alone_for_lightning(tiny_config, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    from recbole_ext import RecBoleDataModule

    RecBoleDataModule("tiny", config_dict=dict(tiny_config, gpu_id="0")).setup()
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"


class _FakeTrainer:
    sanity_checking, should_stop = False, False

    def __init__(self):
        self.callback_metrics, self.current_epoch = {}, 0


def test_early_stopping_is_recboles_rule():
    from recbole_ext.trainer import _RecBoleLog

    class Owner:
        valid_log, epoch_seconds = [], []

    module = torch.nn.Linear(1, 1)
    cb = _RecBoleLog(Owner(), "valid/ndcg@10", bigger=True, stopping_step=1, verbose=False)
    trainer = _FakeTrainer()
    stopped_at = None
    for epoch, score in enumerate([0.1, 0.2, 0.2, 0.15, 0.1, 0.3]):
        trainer.current_epoch, trainer.callback_metrics = epoch, {"valid/ndcg@10": torch.tensor(score)}
        with torch.no_grad():
            module.weight.fill_(epoch)
        cb.on_validation_end(trainer, module)
        if trainer.should_stop:
            stopped_at = epoch
            break
    assert cb.best_epoch == 2                      # the tie at epoch 2 counts as an improvement, as in RecBole
    assert stopped_at == 4                         # stopping_step=1: stop at the 2nd validation without one
    assert float(cb.best_state["weight"]) == 2.0   # the weights kept are the best epoch's


def test_a_metric_we_do_not_compute_is_validated_by_recboles_evaluator(tiny_config):
    # Hit and MAP are RecBole's only: the best epoch's result comes from its evaluator, complete
    result = recbole_ext.run_recbole(model="MVAE", dataset="tiny", config_dict=dict(
        tiny_config, epochs=2, metrics=["Hit", "MAP", "NDCG"]))
    assert set(result["best_valid_result"]) == {f"{m}@{k}" for m in ("hit", "map", "ndcg") for k in (5, 10)}


def test_returned_and_saved_model_is_the_best_epoch(tiny_config):
    from recbole.utils import get_trainer

    from recbole_ext.config import load_data
    from recbole_ext.registry import adapter_class

    config = make_config("MVAE", "tiny", config_dict=dict(tiny_config, epochs=8, learning_rate=0.05,
                                                          stopping_step=100))
    _, train, valid, _ = load_data(config)
    model = adapter_class("MVAE")(config, train._dataset)
    trainer = get_trainer(config["MODEL_TYPE"], "MVAE")(config, model)
    best_score, _ = trainer.fit(train, valid, saved=True, show_progress=False)
    scores = [r["valid_score"] for r in trainer.valid_log]
    assert len(scores) == 8
    # RecBole's evaluator on the weights we kept gives the best epoch's score (not the last one's)
    assert best_score == pytest.approx(max(scores), abs=1e-4)
    again, result = trainer._valid_epoch(valid, show_progress=False)
    assert again == pytest.approx(best_score, abs=1e-4)
    assert result == pytest.approx(trainer.best_valid_result, abs=1e-4)
    saved = torch.load(trainer.saved_model_file, weights_only=False)
    assert saved["epoch"] == scores.index(max(scores))
    for key, value in model.state_dict().items():
        assert torch.equal(saved["state_dict"][key], value), key


def test_the_precision_key_reaches_lightning_and_is_checked(tiny_config, monkeypatch):
    import pytorch_lightning as pl

    seen = {}
    init = pl.Trainer.__init__

    def recording_init(self, *args, **kwargs):
        seen.update(kwargs)
        init(self, *args, **kwargs)

    monkeypatch.setattr(pl.Trainer, "__init__", recording_init)
    result = recbole_ext.run_recbole(model="MVAE", dataset="tiny", config_dict=dict(tiny_config, epochs=1,
                                                                                      precision="bf16-mixed"))
    assert seen["precision"] == "bf16-mixed" and seen["accelerator"] == "cpu"     # use_gpu: False
    assert 0 < result["test_result"]["ndcg@10"] <= 1
    with pytest.raises(ConfigError, match="precision"):
        make_config("MVAE", "tiny", config_dict=dict(tiny_config, precision="bf17"))


def _quiet_run(tiny_root, tmp_path, *extra):
    out = _cli("--model=MVAE", "--dataset=tiny", "--epochs=2", f"--data_path={tiny_root}", "--topk=[5,10]",
               "--valid_metric=NDCG@10", "--train_batch_size=16", *extra, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    screen = (out.stdout + out.stderr).splitlines()
    log = next((tmp_path / "log" / "MVAE").glob("*.log")).read_text()
    return screen, log


def test_a_two_epoch_command_line_run_is_quiet(tiny_root, tmp_path):
    # the screen: one line per validation, the bar, the table, where the checkpoint, log and Comet archive went;
    # RecBole's configuration dump, the model printout and Comet's chatter: the log file
    screen, log = _quiet_run(tiny_root, tmp_path)
    text = "\n".join(screen)
    assert len(screen) <= 40, text
    assert sum(line.startswith("epoch ") and "valid ndcg@10" in line for line in screen) == 2
    for where in ("RecBole checkpoint: saved/MVAE-", "Log file: log/MVAE/", "Comet offline archive:"):
        assert where in text, where
    for noise in ("General Hyper Parameters", "Trainable parameters", "COMET INFO", "GPU available", "LeafSpec",
                  "Warning"):
        assert noise not in text, noise
    for kept in ("General Hyper Parameters", "Trainable parameters", "COMET INFO", "epoch 1 evaluating"):
        assert kept in log, kept


@pytest.mark.slow
def test_verbose_shows_everything_on_screen(tiny_root, tmp_path):
    screen, _ = _quiet_run(tiny_root, tmp_path, "--verbose", "--comet=False")
    text = "\n".join(screen)
    assert "General Hyper Parameters" in text and "Trainable parameters" in text and "epoch 1 evaluating" in text
