"""A Lightning script: DataModule + model + Trainer; DDP gives the single-process numbers."""
import json
import os
import re
import subprocess
import sys

import pytest
import pytorch_lightning as pl
import torch

from lightning_genrec import MVAE
from recbole_ext import RecBoleDataModule
from lightning_genrec.data import ShardSampler

from conftest import FAST, write_tiny_dataset

HERE = os.path.dirname(os.path.abspath(__file__))


def test_shard_sampler_splits_without_padding():
    users = list(range(11))
    shards = [list(ShardSampler(users, 2, r)) for r in range(2)]
    assert sorted(shards[0] + shards[1]) == users          # each user exactly once
    assert len(shards[0]) == 6 and len(shards[1]) == 5


def test_datamodule_serves_recboles_split(tiny_config):
    dm = RecBoleDataModule("tiny", config_dict=tiny_config)
    dm.setup()
    valid, test = dm.data.valid, dm.data.test
    # test ranks exclude the training *and* validation items, as RecBole's full-sort loader does
    u = int(test.users[0])
    train_items = set(dm.data.train[u].indices)
    assert set(valid.positives[u].indices) <= set(test.exclude[u].indices)
    assert train_items <= set(test.exclude[u].indices)
    assert not set(test.positives[u].indices) & set(test.exclude[u].indices)
    batch = next(iter(dm.test_dataloader()))
    assert batch["target"].dtype == batch["exclude"].dtype == torch.bool and batch["input"].dtype == torch.float32
    assert batch["input"].shape[1] == batch["target"].shape[1] == dm.n_items


@pytest.fixture(scope="module")
def odd_checkpoint(tmp_path_factory):
    """A briefly trained MVAE on a dataset with an odd number of users (uneven DDP shards)."""
    work = tmp_path_factory.mktemp("ddp")
    root = str(write_tiny_dataset(str(work), name="odd", n_users=61, n_items=50))
    cwd = os.getcwd()
    os.chdir(work)
    try:
        dm = RecBoleDataModule("odd", config_dict=dict(FAST, data_path=root, topk=[5, 10]), train_batch_size=16)
        model = MVAE(mlp_hidden_size=[32], latent_dimension=8, topk=[5, 10])
        trainer = pl.Trainer(accelerator="cpu", max_epochs=3, logger=False, enable_progress_bar=False,
                             enable_model_summary=False)
        trainer.fit(model, datamodule=dm)
        path = str(work / "odd.ckpt")
        trainer.save_checkpoint(path)
    finally:
        os.chdir(cwd)
    return path, root


def _test_with(devices, ckpt, root, tmp_path):
    out = str(tmp_path / f"metrics_{devices}.json")
    proc = subprocess.run([sys.executable, os.path.join(HERE, "scripts", "ddp_test_metrics.py"), ckpt, root,
                           str(devices), out], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out) as f:
        return json.load(f)


def test_ddp_two_processes_give_identical_test_metrics(odd_checkpoint, tmp_path):
    # equal for a reason that holds on any CPU: one user a batch and one thread a process, so every user
    # gets the same float scores in both runs; the metric states are float64 sums (scripts/ddp_test_metrics.py)
    ckpt, root = odd_checkpoint
    one = _test_with(1, ckpt, root, tmp_path)
    two = _test_with(2, ckpt, root, tmp_path)
    assert one["world_size"] == 1 and two["world_size"] == 2
    assert len(one["metrics"]) == 16   # 8 metrics (TruncatedRecall included) at 2 cut-offs
    for key, value in one["metrics"].items():
        assert two["metrics"][key] == pytest.approx(value, abs=1e-6), key


@pytest.mark.slow   # a fresh process on ml-100k, about 20 s each; .ci/run runs them
@pytest.mark.parametrize("page, comet", [("README.md", False), ("docs/lightning.md", True)])
def test_the_lightning_examples_run(tmp_path, page, comet):
    text = open(os.path.join(os.path.dirname(HERE), page)).read()
    match = re.search(r"<!-- example: lightning -->\s*```python\n(.*?)```", text, re.S)
    assert match, f"{page} must hold the Lightning example"
    script = tmp_path / "example.py"
    script.write_text(match.group(1))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "test/ndcg@20" in proc.stdout
    if comet:
        assert list((tmp_path / "log" / "comet").glob("*.zip")), "the example writes a Comet offline archive"


@pytest.mark.parametrize("model, extra", [
    ("MVAE", {}),
    ("SVAE", {"MAX_ITEM_LIST_LENGTH": 10, "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO",
                                                       "mode": "full"}}),
    # SVAE's block form: RecBole's loaders are general ones, its adapter a sequential model (no blocks)
    ("SVAE", {"eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "TO", "mode": "full"}}),
])
def test_evaluation_batches_are_recboles(tiny_config, model, extra, monkeypatch):
    # the same users in the same batches as RecBole's full-sort loader (scores per batch, for our
    # sequential models too: recbole_ext.lean_sequences), so both entry points compute the very same floats
    from recbole_ext.config import load_data

    # general models: whole blocks of RecBole's batches, as the RecBole door scores them
    # (tests/test_block_scoring.py); blocks of two batches here
    import lightning_genrec.data

    dm = RecBoleDataModule("tiny", model=model, config_dict=dict(tiny_config, eval_batch_size=700, **extra))
    dm.setup()
    recbole_test = load_data(dm.config)[3]
    theirs = [batch[0][dm.config["USER_ID_FIELD"]].tolist() for batch in recbole_test]
    monkeypatch.setattr(lightning_genrec.data, "SCORE_BLOCK", 2 * 700)
    if model != "SVAE":
        theirs = [sum(theirs[i:i + 2], []) for i in range(0, len(theirs), 2)]
    ours = [batch["user"].tolist() for batch in dm.test_dataloader()]
    assert len(ours) > 1 or model == "SVAE"
    assert ours == theirs
