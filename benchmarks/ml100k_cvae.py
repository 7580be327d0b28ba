"""Baselines of the CVAE studies (``studies/ml100k_cvae_cold.yaml``, ``studies/ml100k_cvae_warm.yaml``),
run by ``harness.py``: ContentKNN and Random, scored here on the split RecBole made.

  ContentKNN  user profile = mean content vector of the user's training items; score = cosine(profile,
              item content); the same content rows as CVAE (CVAE's content settings)
  Random      uniform random scores (seeded)

Their metrics come from lightning_genrec.metrics.TopKMetrics (equal to RecBole's evaluator, tested) on
the same users, candidates and positives as RecBole's.
"""
from __future__ import annotations

import resource
import time


def content_knn_scores(data, users):
    """cosine(mean content of each user's training items, each item's content): (B, I)."""
    import numpy as np

    X = data.content.matrix
    R = data.train[users]
    profile = np.asarray(R @ X) / np.maximum(np.asarray(R.sum(axis=1)), 1.0)
    unit = lambda m: m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)   # noqa: E731
    return unit(profile) @ unit(X).T


def run_baseline(model: str, config, primary: str) -> dict:
    """Score ``model`` (ContentKNN or Random) on validation and test; timings, metrics, and the test
    users' ``primary`` metric (ordered by user id) for the paired tests."""
    import numpy as np
    import torch

    from harness import metric_per_row
    from lightning_genrec.metrics import TopKMetrics
    from recbole_ext.config import load_data
    from recbole_ext.model_settings import data_from_recbole

    start = time.perf_counter()
    _, train, valid, test = load_data(config)
    data = data_from_recbole("CVAE", train, valid, test, config)
    rng = np.random.default_rng(config["seed"])
    out = {}
    for phase in ("valid", "test"):
        users = data.split(phase).users
        batch = data.rows(users, phase)
        if model == "ContentKNN":
            scores = torch.from_numpy(content_knn_scores(data, users)).float()
        elif model != "Random":
            raise ValueError(f"no baseline {model!r} here: {', '.join(run_baseline.BASELINES)}")
        else:
            scores = torch.from_numpy(rng.random((len(users), data.n_items))).float()
        scores = scores.masked_fill(batch["exclude"], -float("inf"))
        scores[:, 0] = -float("inf")
        metrics = TopKMetrics(data.n_items, list(config["topk"]), torch.as_tensor(data.item_counts),
                              data.n_train_users)
        metrics.update(scores, batch["target"])
        values = {k: float(v) for k, v in metrics.compute().items()}
        if phase == "test":
            out.update(values)
            order = np.argsort(users, kind="stable")
            per_row = metric_per_row(scores[order], batch["target"][order], primary)
            if per_row is not None:
                out["per_user"] = {"u": [int(u) for u in users[order]], "v": [round(float(v), 5) for v in per_row]}
        else:
            out["best_valid"] = values[config["valid_metric"].lower()]
    seconds = time.perf_counter() - start
    return {"fit_s": seconds, "time_to_best_s": seconds, "epochs": 1, "best_epoch": 0, "s_per_epoch": seconds,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **out}


run_baseline.BASELINES = ("ContentKNN", "Random")
