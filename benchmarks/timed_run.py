"""One RecBole-style train + test run with the timings the benchmarks report.

Shared by the benchmark scripts (each imports it from this folder): the run
loop of ``run_recbole`` with a clock on every validation, so time to the best
validation can be reported, and the peak RSS of the process.
"""
from __future__ import annotations

import resource
import time


def timed_run(config, after_test=None, curve: bool = False) -> dict:
    """Train and test the model of ``config`` (a checked RecBole ``Config``) as ``run_recbole`` does.

    ``after_test(trainer, net, train, test)`` may return more result keys (it runs after the
    test evaluation); ``curve``: also return every validation score (``valid_curve``) and skip
    the test evaluation (a study that chooses on validation must not read test).  Returns timings, the best validation score and the test metrics."""
    import recbole_ext  # noqa: F401  (RecBole fixes + our models)
    from recbole.utils import get_model, get_trainer, init_logger, init_seed

    from recbole_ext.config import load_data

    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    _, train, valid, test = load_data(config)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    net = get_model(config["model"])(config, train._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, net)
    validations = []
    start = time.perf_counter()

    def on_valid(epoch, score):
        validations.append((epoch, time.perf_counter() - start, score))

    best_score, _ = trainer.fit(train, valid, saved=True, show_progress=False, callback_fn=on_valid)
    fit_seconds = time.perf_counter() - start
    if curve:
        result = {"valid_curve": [v[2] for v in validations]}
    else:
        result = {k: float(v) for k, v in trainer.evaluate(test, load_best_model=True, show_progress=False).items()}
    if after_test is not None:
        result.update(after_test(trainer, net, train, test))
    if validations:
        best = max(validations, key=lambda v: v[2])
        best_epoch, to_best, epochs = best[0], best[1], validations[-1][0] + 1
    else:  # Pop, EASE, ItemKNN: one pass, no validation epochs
        best_epoch, to_best, epochs = 0, fit_seconds, 1
    return {"fit_s": fit_seconds, "time_to_best_s": to_best, "epochs": epochs, "best_epoch": best_epoch,
            "s_per_epoch": fit_seconds / max(epochs, 1),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "best_valid": float(best_score), **result}
