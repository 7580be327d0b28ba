"""Comet: the offline archive holds what the run logged, with the values it returned; Comet never breaks a run."""
import json
import zipfile

import pytest
import pytorch_lightning as pl

import recbole_ext
from lightning_genrec import MVAE, SVAE, comet_logger
from recbole_ext import RecBoleDataModule

SMALL = {"MVAE": lambda: MVAE(mlp_hidden_size=[32], latent_dimension=8, topk=[5, 10], total_anneal_steps=20),
         "SVAE": lambda: SVAE(embedding_size=16, rnn_size=16, hidden_size=16, latent_dimension=8, topk=[5, 10],
                              total_anneal_steps=20)}


def _archive_records(path):
    with zipfile.ZipFile(path) as z:
        lines = z.read("messages.json").decode().splitlines()
    params, metrics = {}, {}
    for line in lines:
        msg = json.loads(line)
        payload = msg["payload"]
        if msg["type"] == "parameter_msg":
            p = payload.get("param") or payload["params"]   # comet writes either key
            params[p["paramName"]] = p["paramValue"]
        elif msg["type"] == "metric_msg":
            m = payload["metric"]
            metrics.setdefault(m["metricName"], []).append(float(m["metricValue"]))
    return params, metrics


@pytest.mark.parametrize("name", sorted(SMALL))
def test_lightning_run_writes_offline_archive_with_its_values(name, tiny_config, tmp_path, monkeypatch):
    monkeypatch.delenv("COMET_API_KEY", raising=False)
    logger = comet_logger(project="genrec-test", offline_directory=str(tmp_path / "comet"))
    assert logger is not None and not logger.online
    dm = RecBoleDataModule("tiny", model=name, config_dict=tiny_config, train_batch_size=16)
    model = SMALL[name]()
    trainer = pl.Trainer(accelerator="cpu", max_epochs=2, logger=logger, log_every_n_steps=1,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=dm)
    valid = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("valid/")}
    test = trainer.test(model, datamodule=dm, verbose=False)[0]
    logger.experiment.end()
    path = logger.archive_path()
    assert path and path.startswith(str(tmp_path / "comet"))

    params, metrics = _archive_records(path)
    assert params["latent_dimension"] == 8 and params["total_anneal_steps"] == 20
    for name in ("train/loss_step", "train/kl_weight_step", "train/nll", "train/kl"):
        assert name in metrics, name
    assert metrics["train/kl_weight_step"][0] == 0.0 and metrics["train/kl_weight_step"][-1] > 0
    expected = {f"{m}@{k}" for m in ("ndcg", "recall", "precision", "mrr", "novelty", "itemcoverage",
                                      "giniindex") for k in (5, 10)}
    assert {f"valid/{e}" for e in expected} <= set(metrics)
    for key, value in valid.items():
        assert metrics[key][-1] == pytest.approx(value, abs=1e-6), key
    for key, value in test.items():
        assert metrics[key][-1] == pytest.approx(value, abs=1e-6), key


def test_recbole_entry_point_logs_config_and_test_results(tiny_config, tmp_path, monkeypatch):
    monkeypatch.delenv("COMET_API_KEY", raising=False)
    result = recbole_ext.run_recbole(model="MVAE", dataset="tiny", config_dict=dict(
        tiny_config, comet=True, comet_offline_directory=str(tmp_path / "c")))
    assert result["comet_archive"] and result["comet_archive"].startswith(str(tmp_path / "c"))
    params, metrics = _archive_records(result["comet_archive"])
    assert params["recbole/dataset"] == "tiny" and params["anneal_cap"] == 1.0
    for key, value in result["test_result"].items():
        assert metrics[f"test/{key}"][-1] == pytest.approx(float(value), abs=1e-6), key


def test_comet_failure_never_breaks_a_run(tiny_config, monkeypatch):
    import comet_ml

    def broken(*args, **kwargs):
        raise RuntimeError("comet is down")

    monkeypatch.setattr(comet_ml, "start", broken)
    with pytest.warns(UserWarning, match="comet is down"):
        assert comet_logger() is None
    with pytest.warns(UserWarning, match="Comet logging is off"):
        result = recbole_ext.run_recbole(model="MVAE", dataset="tiny", config_dict=dict(tiny_config, comet=True))
    assert result["test_result"]["ndcg@10"] > 0 and result["comet_archive"] is None
