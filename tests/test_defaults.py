"""One source for each default: the YAMLs, the docs pages' tables, the signatures and the docstrings follow each
model's declared hyperparameters; shared training keys live once; the YAMLs ship in the package."""
import inspect
import os
import shutil
import subprocess
import sys
import zipfile

import pytest
import yaml

from lightning_genrec.models import MODELS
from recbole_ext import defaults
from recbole_ext.model_files import config_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_yaml_readme_signature_and_docstring_follow_the_declaration(name):
    cls = MODELS[name]
    with open(config_path(name)) as f:
        yaml_defaults = yaml.safe_load(f)
    for h in defaults.settings(cls):
        assert yaml_defaults[h.name] == h.default, f"configs/{name.lower()}.yaml: {h.name}"
    for h in cls.HYPERPARAMETERS:
        assert f"{h.name} ({h.type_text()}): {h.meaning}" in cls.__doc__, h.name
    signature = inspect.signature(cls).parameters
    assert list(signature) == [h.name for h in cls.HYPERPARAMETERS]
    assert all(signature[h.name].default == h.default for h in cls.HYPERPARAMETERS)
    page = open(os.path.join(ROOT, "docs", "models", f"{name.lower()}.md")).read()
    assert defaults.markdown_block(cls) in page, f"docs' {name} table is stale: python -m recbole_ext.defaults"
    assert defaults.yaml_block(cls) in open(config_path(name)).read(), "stale YAML: python -m recbole_ext.defaults"


def test_the_check_sees_a_stale_block(monkeypatch):
    assert defaults.main(["--check"]) == 0
    from lightning_genrec.hparams import with_default

    changed = tuple(with_default(h, 300) if h.name == "latent_dimension" else h for h in MODELS["MVAE"].HYPERPARAMETERS)
    monkeypatch.setattr(MODELS["MVAE"], "HYPERPARAMETERS", changed)
    assert defaults.main(["--check"]) == 1


@pytest.mark.parametrize("name", sorted(MODELS))
def test_shared_training_keys_live_once(name):
    with open(config_path("trainer")) as f:
        shared = yaml.safe_load(f)
    with open(config_path(name)) as f:
        own = yaml.safe_load(f)
    for key, value in own.items():
        if key in shared:
            assert value != shared[key], f"configs/{name.lower()}.yaml repeats {key}: {value!r} of trainer.yaml"


def test_the_shared_keys_reach_every_model(tiny_config):
    from recbole_ext.config import make_config

    config = make_config("LARA", "tiny", config_dict={k: v for k, v in tiny_config.items()
                                                      if k not in ("metrics", "valid_metric", "topk")})
    assert config["comet_project"] == "lightning-genrec"            # from trainer.yaml
    assert config["valid_metric"] == "item_ndcg@20"                  # lara.yaml overrides trainer.yaml
    assert config["batch_size"] == 1024 and config["stopping_step"] == 40   # lara.yaml


def test_wheel_ships_the_configs(tmp_path):
    # build from a clean copy, so no stale build/ of the checkout can hide a missing file
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "__pycache__",
                                                              "saved", "log", "log_tensorboard", "lightning_logs"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(src)], check=True, capture_output=True, timeout=300)
    wheel = next(tmp_path.glob("lightning_genrec-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "lightning_genrec/configs/mvae.yaml" in names
    assert "lightning_genrec/configs/protocols/ml100k_default.yaml" in names
    assert any(n.endswith("entry_points.txt") for n in names)
