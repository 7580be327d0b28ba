"""Baselines and extra results of the LARA study (``studies/ml100k_lara.yaml``), run by ``harness.py``.

Baselines (scored here on the cold-start split RecBole made, LARA's attribute settings):
  GenreProfile  cosine(each user's genre shares over their training items, the item's genres)
  MostActive    users ranked by their number of training interactions, for every item
  Random        uniform random scores (seeded)
``after_test`` adds, for trained rows, the training seconds per epoch and the share of a test item's
top-20 users who are among the 20 most active users.
"""
from __future__ import annotations

import resource
import statistics
import time


def baseline_scores(model: str, data, phase: str, rng):
    """``item_scores(items) -> (C, U)`` of a baseline, users as in ``phase``."""
    import numpy as np
    import torch

    counts = data.profile_counts(phase)                                # (U, A) genre counts
    if model == "GenreProfile":
        unit = lambda m: m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)   # noqa: E731
        return lambda items: torch.from_numpy(unit(data.attributes.matrix[items]) @ unit(counts).T)
    if model == "MostActive":
        activity = np.asarray(data.train.sum(axis=1), dtype=np.float32).ravel()
        return lambda items: torch.from_numpy(np.tile(activity, (len(items), 1)))
    if model != "Random":
        raise ValueError(f"no baseline {model!r} here: {', '.join(run_baseline.BASELINES)}")
    return lambda items: torch.from_numpy(rng.random((len(items), data.n_users)))


def overlap_with_most_active(module, data, k: int) -> float:
    """Mean share of a test item's top-k users that are also among the k most active users."""
    import numpy as np
    import torch

    from lightning_genrec.item_ranking import phase_items

    items = phase_items(data, "test")
    with torch.no_grad():
        scores = module.item_user_scores(items, "test").float().cpu()
    scores[:, 0] = -torch.inf
    top = scores.topk(k, dim=1).indices.numpy()                                   # (C, k)
    activity = np.asarray(data.train.sum(axis=1)).ravel()
    active = set(np.argsort(-activity, kind="stable")[:k].tolist())
    return float(np.mean([len(active & set(row.tolist())) / k for row in top]))


def run_baseline(model: str, config, primary: str) -> dict:
    """Item -> users metrics of baseline ``model`` on validation and test."""
    import numpy as np

    from lightning_genrec.item_ranking import phase_item_metrics
    from recbole_ext.config import load_data
    from recbole_ext.model_settings import data_from_recbole

    start = time.perf_counter()
    _, train, valid, test = load_data(config)
    data = data_from_recbole("LARA", train, valid, test, config)
    rng = np.random.default_rng(config["seed"])
    out = {}
    for phase in ("valid", "test"):
        values = phase_item_metrics(data, phase, baseline_scores(model, data, phase, rng), config["topk"])
        if phase == "test":
            out.update(values)
        else:
            out["best_valid"] = values[config["valid_metric"].lower()]
    seconds = time.perf_counter() - start
    return {"fit_s": seconds, "time_to_best_s": seconds, "epochs": 1, "best_epoch": 0, "s_per_epoch": seconds,
            "train_s_per_epoch": 0.0, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "n_test_items": int(len(np.flatnonzero(np.asarray(data.test.positives.sum(0)).ravel()))), **out}


run_baseline.BASELINES = ("GenreProfile", "MostActive", "Random")


def after_test(trainer, net, train, test) -> dict:
    return {"train_s_per_epoch": statistics.mean(trainer.epoch_seconds),
            "overlap_most_active@20": overlap_with_most_active(net.module, net.data, 20)}
