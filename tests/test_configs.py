"""One source of truth: YAML defaults equal the model signature; the YAML ships in the package."""
import inspect
import os
import shutil
import subprocess
import sys
import zipfile

import pytest
import yaml

from lightning_genrec.models import MODELS
from recbole_ext.config import config_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_yaml_defaults_equal_the_signature(name):
    with open(config_path(name)) as f:
        yaml_defaults = yaml.safe_load(f)
    signature = inspect.signature(MODELS[name].__init__).parameters
    model_keys = [p for p in signature if p not in ("self", "n_items")]
    for key in model_keys:
        assert key in yaml_defaults, f"{key} missing from configs/{name.lower()}.yaml"
        default = signature[key].default
        default = list(default) if isinstance(default, tuple) else default
        assert yaml_defaults[key] == default, key


@pytest.mark.parametrize("name", sorted(MODELS))
def test_docstring_documents_every_hyperparameter(name):
    doc = MODELS[name].__doc__
    for key in inspect.signature(MODELS[name].__init__).parameters:
        if key != "self":
            assert f"{key}:" in doc, key


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
