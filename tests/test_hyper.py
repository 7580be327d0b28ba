"""RecBole's hyperparameter search (HyperTuning + objective_function) on our models, and the example
search spaces in configs/hyper."""
from __future__ import annotations

import ast
import os
import sys

import pytest
from conftest import SMALL

from lightning_genrec.errors import ConfigError
from lightning_genrec.models import MODELS
from recbole_ext.__main__ import main
from recbole_ext.hyper import example_space, run_hyper


def _space(path):
    out = {}
    with open(path) as f:
        for line in f:
            name, kind, values = line.split(maxsplit=2)
            out[name] = (kind, ast.literal_eval(values.replace(" ", "")))
    return out


@pytest.mark.parametrize("model", list(MODELS))
def test_every_model_has_an_example_space_of_its_own_valid_settings(model):
    space = _space(example_space(model))
    assert len(space) >= 3
    for name, (kind, values) in space.items():
        assert kind == "choice"                       # exhaustive search (the default) needs a discrete space
        assert len(values) >= 2
        for value in values:
            MODELS[model].check_hparams(**{name: value})   # a known setting, in its allowed range


def test_run_hyper_trains_each_point_and_keeps_the_best_on_validation(tiny_config, tmp_path):
    params = tmp_path / "space.hyper"
    params.write_text("latent_dimension choice [4,8]\ndropout_prob choice [0.2,0.5]\n")
    fixed = {k: v for k, v in {**tiny_config, **SMALL["MVAE"]}.items() if k != "latent_dimension"}
    out = tmp_path / "trials.result"
    tuner = run_hyper("MVAE", "tiny", str(params), config_dict={**fixed, "epochs": 2}, output_file=str(out),
                      early_stop=1)
    assert len(tuner.params2result) == 4              # exhaustive: every point, whatever early_stop says
    scores = {p: r["best_valid_score"] for p, r in tuner.params2result.items()}
    assert tuner.best_score == max(scores.values())
    best = max(scores, key=scores.get)
    assert best == tuner.params2str(tuner.best_params)
    assert all("ndcg@10" in r["test_result"] for r in tuner.params2result.values())
    text = out.read_text()
    assert text.count("Valid result:") == 4 and "latent_dimension:8" in text


def test_bad_searches_are_clear_errors_before_any_trial(tiny_config, tmp_path, monkeypatch):
    params = tmp_path / "space.hyper"
    params.write_text("latent_dimension choice [4,8]\n")
    with pytest.raises(ConfigError, match="latent_dimension is both searched"):
        run_hyper("MVAE", "tiny", str(params), config_dict={**tiny_config, "latent_dimension": 4})
    monkeypatch.setattr(sys, "argv", ["prog", "--latent_dimension=8", "--epochs=1"])   # RecBole reads these too
    with pytest.raises(ConfigError, match="latent_dimension is both searched .* command line"):
        run_hyper("MVAE", "tiny", str(params), config_dict=tiny_config)
    monkeypatch.setattr(sys, "argv", ["prog"])
    with pytest.raises(ConfigError, match="algo='grid'"):
        run_hyper("MVAE", "tiny", str(params), config_dict=tiny_config, algo="grid")
    with pytest.raises(FileNotFoundError, match="nothere.hyper"):
        run_hyper("MVAE", "tiny", "nothere.hyper", config_dict=tiny_config)
    with pytest.raises(ConfigError, match="no example search space for Pop"):
        example_space("Pop")


def test_command_line_errors_are_one_line(capsys):
    assert main(["hyper", "--model=MVAE", "--params_file=missing.hyper"]) == 2
    err = capsys.readouterr().err
    assert "missing.hyper not found" in err and err.count("\n") == 1
    assert not os.path.exists("hyper.result")
