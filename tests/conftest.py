"""Shared fixtures: a tiny synthetic RecBole dataset (fast) and the shipped ml-100k."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

# One thread per process, here and in every process a test starts (the command-line and DDP scripts
# inherit the environment; Lightning then leaves the count alone).  The tests' tensors are tiny, so a
# thread pool buys nothing, and OpenMP's spinning workers collapse when another process holds a core:
# measured on 2 cores with one busy process, the 3-seed LARA training test took 68 s with 2 threads
# against 18 s with 1 (and 18 s idle).  It also gives 1- and 2-process runs the same per-process
# arithmetic (see the DDP tests).
os.environ["OMP_NUM_THREADS"] = "1"

import torch  # noqa: E402

torch.set_num_threads(1)

import recbole_ext  # noqa: E402,F401  (compat + registration before recbole is used)

# nothing in the test suite talks to Comet's servers
os.environ.pop("COMET_API_KEY", None)
# RecBole's Config reads --key=value arguments from sys.argv: pytest's own (--durations=8, ...) would
# become config keys (and "unknown config key" warnings) in every test; tests that test the command line
# set sys.argv themselves
sys.argv[1:] = []

#: Relative tolerance for float32 results that were computed with different batch shapes (or thread
#: counts, process counts, devices).  A float32 matrix product is not bitwise independent of its batch
#: shape: BLAS blocks and orders the k-term sums differently for 7 rows than for 60, so each output
#: moves by up to about k * eps32 (600 hidden units * 6e-8 = 4e-5) of its magnitude per layer.  Issue 12
#: measured 1e-4 absolute on MVAE scores of magnitude ~0.1 on an AMD EPYC; we allow 1e-3 of the largest
#: |value| and check it stays far below the spread of the values, so a wrong row, column or transpose
#: still fails.
FLOAT32_BATCH_RTOL = 1e-3


def assert_close_across_batch_shapes(got, expected, rel: float = FLOAT32_BATCH_RTOL) -> None:
    """``got`` equals ``expected`` up to float32 accumulation order (see ``FLOAT32_BATCH_RTOL``)."""
    got, expected = got.detach(), expected.detach().to(got.dtype)
    atol = rel * float(expected.abs().max())
    assert float(expected.std()) > 20 * atol, "the tolerance would hide real differences: test with varied values"
    torch.testing.assert_close(got, expected, atol=atol, rtol=0)

FAST = {"comet": False, "show_progress": False, "state": "WARNING", "use_gpu": False}


def write_tiny_dataset(root, name="tiny", n_users=60, n_items=80, per_user=15, seed=0, item_file=True):
    """Users in 4 taste groups, each group preferring a quarter of the items."""
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, name)
    os.makedirs(folder, exist_ok=True)
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    for u in range(n_users):
        group = u % 4
        liked = np.arange(group * n_items // 4, (group + 1) * n_items // 4)
        others = np.setdiff1d(np.arange(n_items), liked)
        items = np.concatenate([rng.choice(liked, per_user - 3, replace=False), rng.choice(others, 3, replace=False)])
        for t, i in enumerate(rng.permutation(items)):
            lines.append(f"u{u}\ti{i}\t{rng.integers(1, 6)}\t{1000 + 10 * u + t}")
    with open(os.path.join(folder, f"{name}.inter"), "w") as f:
        f.write("\n".join(lines) + "\n")
    if item_file:
        genres = ["Action", "Comedy", "Drama", "Horror"]
        with open(os.path.join(folder, f"{name}.item"), "w") as f:
            f.write("item_id:token\tclass:token_seq\n")
            for i in range(n_items):
                f.write(f"i{i}\t{genres[i * 4 // n_items]} {genres[(i + 1) % 4]}\n")
    return root


#: per model: hyperparameters that keep it fast on the tiny dataset ...
SMALL = {
    "MVAE": dict(mlp_hidden_size=[32], latent_dimension=8, topk=[5, 10]),
    "SVAE": dict(embedding_size=16, rnn_size=16, hidden_size=16, latent_dimension=8, topk=[5, 10]),
    "CVAE": dict(mlp_hidden_size=[16, 8], latent_dimension=4, pretrain_epochs=2, topk=[5, 10]),
    "CFGAN": dict(g_hidden_size=32, d_hidden_size=16, g_batch_size=8, d_batch_size=16, topk=[5, 10], mode="user"),
    "LARA": dict(hidden_size=16, batch_size=64, topk=[5, 10]),
}
#: ... and the data settings it needs there (content / attribute fields the tiny .item file has, a cold-start
#: share that leaves LARA enough held-out items, smaller sequence batches)
TINY_SETTINGS = {
    "SVAE": {"train_batch_size": 8},
    "CVAE": {"content_fields": ["class"], "content_min_count": 1},
    "LARA": {"valid_metric": "item_ndcg@10", "cold_item_ratio": 0.4},
}


def small_config(name: str, tiny_config: dict, **extra) -> dict:
    """RecBole config_dict for model ``name`` on the tiny dataset, with its SMALL hyperparameters."""
    return {**tiny_config, **SMALL.get(name, {}), **TINY_SETTINGS.get(name, {}), **extra}


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    return str(write_tiny_dataset(tmp_path_factory.mktemp("data")))


@pytest.fixture
def tiny_config(tiny_root):
    """config_dict for the tiny dataset: fast and quiet."""
    return dict(FAST, data_path=tiny_root, epochs=3, eval_batch_size=700, train_batch_size=16,
                metrics=["Recall", "MRR", "NDCG", "Precision", "Novelty", "ItemCoverage", "GiniIndex"],
                topk=[5, 10], valid_metric="NDCG@10")


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path, monkeypatch):
    """RecBole and Lightning write saved/, log/ and lightning_logs/ into the working directory."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def ml100k(tmp_path_factory):
    """(config, dataset, train, valid, test) for ml-100k with RecBole's default split."""
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("ml100k"))
    try:
        from recbole_ext.config import load_data, make_config

        config = make_config("MVAE", "ml-100k", config_dict=dict(FAST, topk=[5, 10, 20]))
        return (config, *load_data(config))
    finally:
        os.chdir(cwd)


def random_ndcg(data, phase: str = "test", k: int = 10) -> float:
    """NDCG@k of seeded uniform random scores over the same users and candidates as a model's ``phase``."""
    import torch

    from lightning_genrec.metrics import TopKMetrics

    batch = data.rows(data.split(phase).users, phase)
    scores = torch.rand(batch["target"].shape, generator=torch.Generator().manual_seed(0))
    scores = scores.masked_fill(batch["exclude"], -float("inf"))
    scores[:, 0] = -float("inf")
    metrics = TopKMetrics(data.n_items, [k])
    metrics.update(scores, batch["target"])
    return float(metrics.compute()[f"ndcg@{k}"])


def assert_entry_points_agree(result, model, datamodule) -> None:
    """Load the best weights RecBole's run_recbole saved (``result`` of ``run_recbole``) into ``model``,
    test them through Lightning's loop on ``datamodule``, and check all test metrics equal RecBole's (RecBole's
    7 at each K, plus the 3 item -> users metrics at each K when the model computes them)."""
    import pytorch_lightning as pl
    import torch

    state = torch.load(result["saved_model_file"], weights_only=False)["state_dict"]
    model.load_state_dict({k[len("module."):]: v for k, v in state.items()})
    out = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False).test(model, datamodule=datamodule,
                                                                                      verbose=False)[0]
    n_k = len(datamodule.config["topk"])
    assert len(result["test_result"]) == (7 + (3 if model.item_metrics else 0)) * n_k
    for key, value in result["test_result"].items():
        assert out[f"test/{key}"] == pytest.approx(float(value), abs=1e-4), key


def assert_each_gan_phase_moves_only_its_network(model, loss_module, fit, monkeypatch) -> None:
    """Run ``fit()`` (one round of a GAN ``model``) with ``loss_module``'s ``d_loss_fn`` / ``g_loss_fn``
    wrapped to snapshot both networks: the D steps must leave G unchanged and move D, the G steps the reverse."""
    import torch

    seen = {"D": [], "G": []}

    def snapshot():
        return ([p.detach().clone() for p in model.generator.parameters()],
                [p.detach().clone() for p in model.discriminator.parameters()])

    d_real, g_real = loss_module.d_loss_fn, loss_module.g_loss_fn
    monkeypatch.setattr(loss_module, "d_loss_fn", lambda *a: seen["D"].append(snapshot()) or d_real(*a))
    monkeypatch.setattr(loss_module, "g_loss_fn", lambda *a: seen["G"].append(snapshot()) or g_real(*a))
    fit()
    (g_first, d_first), (g_last, d_last) = seen["D"][0], seen["D"][-1]
    assert all(torch.equal(a, b) for a, b in zip(g_first, g_last))        # D steps leave G alone
    assert not all(torch.equal(a, b) for a, b in zip(d_first, d_last))
    (g_first, d_first), (g_last, d_last) = seen["G"][0], seen["G"][-1]
    assert all(torch.equal(a, b) for a, b in zip(d_first, d_last))        # G steps leave D alone
    assert not all(torch.equal(a, b) for a, b in zip(g_first, g_last))


def fit_model(model, datamodule, epochs: int, tmp_path):
    """Fit ``model`` on ``datamodule`` for ``epochs`` on CPU, quietly; returns the Trainer."""
    import pytorch_lightning as pl

    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_checkpointing=False, default_root_dir=str(tmp_path))
    trainer.fit(model, datamodule=datamodule)
    return trainer
