"""Bad input through every entry point: a clear, typed error (or a warning) before data loads where no
data is needed, through RecBole's own ``run_recbole`` as well as ours, and one line on the command line."""
import os
import sys
import warnings

import pytest

import recbole_ext
from lightning_genrec import ConfigError, HyperparameterError
from recbole_ext import RecBoleDataModule
from recbole_ext.__main__ import main as command_line

from conftest import FAST


def _recboles_run_recbole():
    from recbole.quick_start import run_recbole

    return run_recbole


RUNNERS = {"ours": lambda: recbole_ext.run_recbole, "recbole": _recboles_run_recbole}


@pytest.fixture
def no_data_loading(monkeypatch):
    """Fail the test if RecBole starts loading the data set."""
    import recbole.data.dataset.dataset as dataset_module

    monkeypatch.setattr(dataset_module.Dataset, "__init__", lambda *a, **k: pytest.fail("the data set was loaded"))


@pytest.mark.parametrize("runner", sorted(RUNNERS))
@pytest.mark.parametrize("bad, words", [
    ({"epochs": -1}, "invalid setting epochs=-1: must be an integer >= 1"),
    ({"train_batch_size": 0}, "invalid setting train_batch_size=0: must be an integer >= 1"),
    ({"eval_batch_size": "big"}, "invalid setting eval_batch_size='big': must be an integer >= 1"),
    ({"topk": [0]}, "topk must be a positive integer"),   # RecBole's own check, as a ConfigError on our side
    ({"learning_rate": "abc"}, "invalid hyperparameter learning_rate='abc': must be a number > 0"),
    ({"valid_metric": "ndcg@999"}, "valid_metric='ndcg@999' cannot select MVAE's epochs"),
    ({"nproc": 0}, "nproc=0: must be an integer >= 1"),
    ({"nproc": 2, "world_size": 3}, "world_size=3 with nproc=2: world_size is the number of processes on all"),
])
def test_bad_settings_are_refused_before_data_loads(tiny_config, runner, bad, words, no_data_loading):
    with pytest.raises(ConfigError if runner == "ours" or "topk" not in bad else ValueError, match=words):
        RUNNERS[runner]()(model="MVAE", dataset="tiny", config_dict=dict(tiny_config, **bad))


def test_the_datamodule_refuses_an_empty_split_too(tmp_path):
    root = _one_interaction_per_user(str(tmp_path))
    with pytest.raises(ConfigError, match="the valid split of single is empty"):
        RecBoleDataModule("single", config_dict=dict(FAST, data_path=root, topk=[5])).setup()


def test_cut_offs_beyond_the_catalogue_are_named(tmp_path):
    root = _one_interaction_per_user(str(tmp_path))
    with pytest.raises(ConfigError, match="topk=\\[10, 20\\]: the largest K \\(20\\) exceeds the 7 items"):
        recbole_ext.run_recbole(model="MVAE", dataset="single", config_dict=dict(FAST, data_path=root, epochs=1))


def test_a_hyperparameter_error_is_a_config_error():
    assert issubclass(HyperparameterError, ConfigError)   # one type to catch for every bad setting


def test_the_datamodule_checks_settings_too(tiny_config, no_data_loading):
    with pytest.raises(HyperparameterError, match="invalid setting epochs=0"):
        RecBoleDataModule("tiny", config_dict=dict(tiny_config, epochs=0)).setup()


@pytest.mark.parametrize("runner", sorted(RUNNERS))
def test_a_misspelt_key_is_named_with_the_closest_known_one(tiny_config, runner):
    with pytest.warns(UserWarning, match="unknown config key 'laerning_rate'.*did you mean 'learning_rate'"):
        RUNNERS[runner]()(model="MVAE", dataset="tiny", config_dict=dict(tiny_config, epochs=1, laerning_rate=0.01))


def test_known_keys_raise_no_warning(tiny_config):
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="unknown config key")
        recbole_ext.make_config("LARA", "tiny", config_dict=dict(tiny_config, valid_metric="item_ndcg@10",
                                                                 cold_item_ratio=0.4, collapse_patience=3,
                                                                 attribute_fields=["class"], topk=[10]))


def _one_interaction_per_user(root):
    folder = os.path.join(root, "single")
    os.makedirs(folder, exist_ok=True)
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    lines += [f"u{u}\ti{u % 7}\t3\t{1000 + u}" for u in range(40)]
    with open(os.path.join(folder, "single.inter"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("runner", sorted(RUNNERS))
def test_an_empty_validation_split_is_an_error_naming_the_split(tmp_path, runner):
    root = _one_interaction_per_user(str(tmp_path))
    with pytest.raises(ConfigError, match="the valid split of single is empty.*eval_args="):
        RUNNERS[runner]()(model="MVAE", dataset="single", config_dict=dict(FAST, data_path=root, epochs=1, topk=[5],
                                                                             valid_metric="NDCG@5"))
    assert not list((tmp_path / "saved").glob("*.pth")) if (tmp_path / "saved").exists() else True


@pytest.mark.parametrize("flag, words", [
    ("--nproc=0", "nproc=0"), ("--topk=[0]", "topk must be a positive integer"), ("--epochs=-1", "epochs=-1"),
    ("--valid_metric=ndcg@999", "valid_metric='ndcg@999'"),
])
def test_command_line_errors_are_one_line_with_status_2(tiny_root, monkeypatch, capsys, flag, words):
    monkeypatch.setattr(sys, "argv", ["lightning-genrec", "--model=MVAE", "--dataset=tiny",
                                      f"--data_path={tiny_root}", "--comet=False", flag])
    assert command_line() == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err and "Traceback" not in err


# -- atomic files ------------------------------------------------------------------------------------------

GOOD = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"] + [
    f"u{u}\ti{(u * 3 + k) % 20}\t{1 + k % 5}\t{1000 + 10 * u + k}" for u in range(30) for k in range(8)]


def _broken(root, lines, name="broken"):
    folder = os.path.join(root, name)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{name}.inter"), "w") as f:
        f.write("\n".join(lines) + ("\n" if lines else ""))
    return root


@pytest.mark.parametrize("runner", sorted(RUNNERS))
@pytest.mark.parametrize("lines, words", [
    (["user_id\titem_id"] + GOOD[1:], "broken.inter, line 1: the header column 'user_id' has no type"),
    (["user_id:token\titem_id:number"] + GOOD[1:], "column 'item_id' has type 'number'"),
    (GOOD[:9] + ["u1\ti2\tabc\t1000"] + GOOD[9:], "line 10: column 'rating' is a float column but holds 'abc'"),
    (GOOD[:1], "broken.inter has a header but no data lines"),
    ([], "broken.inter is empty"),
])
def test_broken_atomic_files_name_the_file_and_line(tmp_path, runner, lines, words):
    from lightning_genrec import DataFileError

    root = _broken(str(tmp_path), lines)
    load = {"inter": ["user_id", "item_id", "rating"]}          # rating is read, so it must parse
    with pytest.raises(DataFileError, match=words):
        RUNNERS[runner]()(model="MVAE", dataset="broken", config_dict=dict(FAST, data_path=root, epochs=1, topk=[5],
                                                                           valid_metric="NDCG@5", load_col=load))


def test_a_broken_file_is_one_line_on_the_command_line(tmp_path, monkeypatch, capsys):
    root = _broken(str(tmp_path), GOOD[:4] + ["u1\ti2\tabc\t1000"] + GOOD[4:])
    monkeypatch.setattr(sys, "argv", ["lightning-genrec", "--model=MVAE", "--dataset=broken", f"--data_path={root}",
                                      "--comet=False", "--topk=[5]", "--valid_metric=NDCG@5",
                                      "--load_col={'inter': ['user_id', 'item_id', 'rating']}"])
    assert command_line() == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "line 5: column 'rating' is a float column but holds 'abc'" in err


@pytest.mark.parametrize("lines, words", [
    (GOOD[:4] + ["u1\ti2\t3"] + GOOD[4:], r"1 of 241 lines .*\(0 more, 1 fewer\); the first is line 5 \(3 columns\)"),
    (GOOD[:7] + ["u1\ti2\t3\t1000\textra"] + GOOD[7:] + ["u2\ti3\t3\t1\t2"],
     r"2 of 242 lines .*\(2 more, 0 fewer\); the first is line 8 \(5 columns\)"),
])
def test_lines_recbole_pads_or_cuts_load_as_recbole_reads_them_with_one_warning(tmp_path, lines, words):
    # RecBole's own test data has such a line (test.inter, line 6018): never stricter than RecBole
    from recbole.data import create_dataset
    from recbole.utils import FeatureSource

    from lightning_genrec.errors import DataFileWarning
    from recbole_ext import make_config, patches

    root = _broken(str(tmp_path), lines)
    config = make_config("MVAE", "broken", config_dict=dict(FAST, data_path=root, topk=[5], valid_metric="NDCG@5"))
    with pytest.warns(DataFileWarning, match=words) as caught:
        dataset = create_dataset(config)
    assert sum(issubclass(w.category, DataFileWarning) for w in caught) == 1      # once per file
    path = os.path.join(root, "broken", "broken.inter")
    recboles = patches.ORIGINAL["recbole.data.dataset.dataset:Dataset._load_feat"](
        dataset, path, FeatureSource.INTERACTION)
    with pytest.warns(DataFileWarning):
        ours = dataset._load_feat(path, FeatureSource.INTERACTION)
    assert ours.equals(recboles) and len(ours) == len(lines) - 1


def test_repeated_interactions_are_counted_in_a_warning(tmp_path):
    from recbole.data import create_dataset

    from lightning_genrec.errors import DataFileWarning
    from recbole_ext import make_config

    root = _broken(str(tmp_path), GOOD + GOOD[1:] + GOOD[1:41])                  # 240 rows, repeated 2 and 3 times
    settings = dict(FAST, data_path=root, topk=[5], valid_metric="NDCG@5")
    with pytest.warns(DataFileWarning, match=r"broken: 280 of 520 interactions repeat .* rm_dup_inter: first"):
        kept = create_dataset(make_config("MVAE", "broken", config_dict=settings))
    assert kept.inter_num == 520                                                 # RecBole keeps them: so do we
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataFileWarning)
        clean = create_dataset(make_config("MVAE", "broken", config_dict=dict(settings, rm_dup_inter="first")))
        assert clean.inter_num == 240
        create_dataset(make_config("MVAE", "broken", config_dict=dict(settings, data_path=_broken(
            str(tmp_path / "clean"), GOOD))))                                    # no repeats: no warning


def test_the_intact_file_of_the_same_tests_trains(tmp_path):
    root = _broken(str(tmp_path), GOOD)
    result = recbole_ext.run_recbole(model="MVAE", dataset="broken", config_dict=dict(
        FAST, data_path=root, epochs=1, topk=[5], valid_metric="NDCG@5"))
    assert 0 <= result["test_result"]["ndcg@5"] <= 1


# -- checkpoints ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def recbole_checkpoint(tmp_path_factory):
    """(RecBole checkpoint, Lightning checkpoint) of a briefly trained MVAE on its own tiny data set."""
    import pytorch_lightning as pl

    from conftest import write_tiny_dataset
    from lightning_genrec import MVAE

    work = tmp_path_factory.mktemp("ckpt")
    root = str(write_tiny_dataset(str(work)))
    cwd = os.getcwd()
    os.chdir(work)
    try:
        cfg = dict(FAST, data_path=root, epochs=1, topk=[5, 10], valid_metric="NDCG@10")
        saved = recbole_ext.run_recbole(model="MVAE", dataset="tiny", config_dict=cfg)["saved_model_file"]
        dm = RecBoleDataModule("tiny", config_dict=cfg)
        trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                             enable_checkpointing=False)
        trainer.fit(MVAE(mlp_hidden_size=[8], latent_dimension=4, topk=[5, 10]), datamodule=dm)
        ckpt = str(work / "model.ckpt")
        trainer.save_checkpoint(ckpt)
    finally:
        os.chdir(cwd)
    return os.path.join(str(work), saved) if not os.path.isabs(saved) else saved, ckpt


@pytest.mark.parametrize("kind, words", [
    ("empty", "is empty \\(0 bytes\\), not a RecBole checkpoint: pass the saved/"),
    ("garbage", "cannot be read as a torch checkpoint"),
    ("truncated", "cannot be read as a torch checkpoint \\(truncated"),
    ("lightning", "is a Lightning checkpoint, not RecBole's: load it with <Model>.load_from_checkpoint"),
    ("other", "holds a list without RecBole's 'config' and 'state_dict'"),
])
def test_files_that_are_not_recbole_checkpoints_are_named(recbole_checkpoint, tmp_path, kind, words):
    import torch
    from recbole.quick_start import load_data_and_model

    from lightning_genrec import CheckpointError

    saved, ckpt = recbole_checkpoint
    path = tmp_path / "given.pth"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(b"this is not a checkpoint\n" * 10)
    elif kind == "truncated":
        data = open(saved, "rb").read()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "lightning":
        path = ckpt
    else:
        torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match=words) as err:
        load_data_and_model(str(path))
    assert "\n" not in str(err.value)


def test_a_real_checkpoint_still_loads(recbole_checkpoint):
    from recbole.quick_start import load_data_and_model

    config, model, *_ = load_data_and_model(recbole_checkpoint[0])
    assert config["model"] == "MVAE" and type(model).__name__ == "MVAE"


def test_a_split_without_validation_share_is_not_an_error(tiny_config):
    cfg = dict(tiny_config, epochs=1, eval_step=0,
               eval_args={"split": {"RS": [0.8, 0.0, 0.2]}, "order": "RO", "group_by": "user", "mode": "full"})
    result = recbole_ext.run_recbole(model="MVAE", dataset="tiny", config_dict=cfg)
    assert 0 <= result["test_result"]["ndcg@10"] <= 1


def test_a_file_recbole_does_not_load_is_not_checked(tmp_path):
    root = _broken(str(tmp_path), GOOD)
    with open(os.path.join(root, "broken", "broken.user"), "w") as f:
        f.write("user_id age\nu1\n")                       # broken, but load_col never asks for it
    result = recbole_ext.run_recbole(model="MVAE", dataset="broken", config_dict=dict(
        FAST, data_path=root, epochs=1, topk=[5], valid_metric="NDCG@5", load_col={"inter": ["user_id", "item_id"]}))
    assert 0 <= result["test_result"]["ndcg@5"] <= 1


def test_a_wrong_field_separator_is_named(tmp_path):
    from lightning_genrec import DataFileError

    root = _broken(str(tmp_path), [line.replace("\t", ",") for line in GOOD])
    with pytest.raises(DataFileError, match="does not split into columns at field_separator='\\\\t'"):
        recbole_ext.run_recbole(model="MVAE", dataset="broken", config_dict=dict(FAST, data_path=root, epochs=1))
