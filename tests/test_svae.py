"""SVAE: the paper's loss, padding that changes nothing, RecBole's sequential data through both entry points."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

import recbole_ext
from lightning_genrec import SVAE
from recbole_ext import RecBoleDataModule
from lightning_genrec.models.svae import SeqVAE, next_k_targets, svae_loss
from recbole_ext.config import ConfigError, make_config

import conftest
from conftest import FAST, assert_close_across_batch_shapes, assert_entry_points_agree, write_tiny_dataset

HERE = os.path.dirname(os.path.abspath(__file__))
SMALL = conftest.SMALL["SVAE"]


def _svae_config(tiny_config, **extra):
    """The tiny dataset under RecBole's sequential protocol (SVAE's default)."""
    cfg = {k: v for k, v in tiny_config.items() if k != "train_batch_size"}
    return dict(cfg, **{k: v for k, v in SMALL.items() if k != "topk"}, train_batch_size=8, **extra)


def _time_ordered_items(root, name="tiny"):
    """user token -> item tokens in time order, read straight from the .inter file."""
    rows = [line.rstrip("\n").split("\t") for line in open(os.path.join(root, name, f"{name}.inter"))][1:]
    out = {}
    for u, i, _, t in sorted(rows, key=lambda r: (r[0], float(r[3]))):
        out.setdefault(u, []).append(i)
    return out


# -- the model's arithmetic ------------------------------------------------------------

def test_next_k_targets_are_the_following_items_counted_once():
    seq = torch.tensor([[5, 6, 7, 6, 8, 0, 0]])
    t = next_k_targets(seq, steps=4, k=3)
    assert t[0, 0].tolist() == [6, 7, 0]         # 6 repeats within the window: counted once
    assert t[0, 1].tolist() == [7, 6, 8]
    assert t[0, 3].tolist() == [8, 0, 0]         # fewer targets near the end
    assert next_k_targets(seq, steps=4, k=1)[0, :, 0].tolist() == [6, 7, 6, 8]   # k=1: plain next item


def test_loss_is_the_per_sequence_loss_averaged_over_the_batch():
    """Dense reference, one sequence at a time (the authors' batch size 1): multi-hot NLL over
    the next k items summed over steps, / k (the documented divisor; the authors' differs only
    for sequences with fewer than k items after the first), plus beta * the step-averaged KL."""
    torch.manual_seed(0)
    n_items, k, beta = 30, 3, 0.37
    net = SeqVAE(n_items, 8, 8, 8, 4).eval()
    seqs = [torch.tensor([3, 4, 5, 6, 7, 8]), torch.tensor([9, 10, 11]), torch.tensor([12, 13, 14, 15, 16, 17, 18, 19])]
    lengths = torch.tensor([len(s) - 1 for s in seqs])
    padded = torch.zeros(3, 8, dtype=torch.long)
    for b, s in enumerate(seqs):
        padded[b, :len(s)] = s
    steps = int(lengths.max())
    logits, mu, logvar = net(padded[:, :steps])
    loss, _, _ = svae_loss(logits, mu, logvar, next_k_targets(padded, steps, k), lengths, k, beta)

    reference = []
    for s in seqs:
        lg, m, lv = net(s[:-1].unsqueeze(0))
        y = torch.zeros(len(s) - 1, n_items)
        for t in range(len(s) - 1):
            y[t, s[t + 1:t + 1 + k]] = 1.0
        nll = -(y * F.log_softmax(lg[0], dim=1)).sum() / k
        kl = (0.5 * (-lv[0] + lv[0].exp() + m[0] ** 2 - 1).sum(dim=1)).mean()
        reference.append(nll + beta * kl)
    # batched vs one sequence at a time: float32 sums over a few dozen terms, relative error ~1e-6
    assert loss.item() == pytest.approx(torch.stack(reference).mean().item(), rel=1e-5)


def test_padding_changes_no_score_and_no_loss():
    torch.manual_seed(1)
    net = SeqVAE(40, 8, 12, 8, 4).eval()
    short = torch.tensor([[4, 9, 2]])
    alone = net.last_step_logits(short, torch.tensor([3]))
    batch = torch.tensor([[4, 9, 2, 0, 0, 0, 0], [1, 2, 3, 4, 5, 6, 7], [8, 0, 0, 0, 0, 0, 0]])
    together = net.last_step_logits(batch, torch.tensor([3, 7, 1]))
    assert_close_across_batch_shapes(together[0], alone[0])    # 3 rows vs 1: float32 accumulation order
    # and the training loss of one sequence does not depend on what it is batched with
    seq = torch.tensor([[4, 9, 2, 11, 5]])
    one_logits, one_mu, one_lv = net(seq[:, :4])
    one, _, _ = svae_loss(one_logits, one_mu, one_lv, next_k_targets(seq, 4, 2), torch.tensor([4]), 2, 0.5)
    padded = torch.tensor([[4, 9, 2, 11, 5, 0, 0, 0, 0], [1, 2, 3, 4, 5, 6, 7, 8, 9]])
    lengths = torch.tensor([4, 8])
    lg, m, lv = net(padded[:, :8])
    targets = next_k_targets(padded, 8, 2)
    per_row = [svae_loss(lg[i:i + 1], m[i:i + 1], lv[i:i + 1], targets[i:i + 1], lengths[i:i + 1], 2, 0.5)[0]
               for i in range(2)]
    assert per_row[0].item() == pytest.approx(one.item(), rel=1e-5)   # as above: ~1e-6 from accumulation order


def test_empty_history_is_scored_from_the_initial_state():
    torch.manual_seed(2)
    net = SeqVAE(20, 4, 6, 4, 2).eval()
    scores = net.last_step_logits(torch.tensor([[0, 0, 0], [3, 4, 0]]), torch.tensor([0, 2]))
    mu, _ = net.encoder(torch.zeros(1, 6)).chunk(2, dim=-1)       # the GRU's initial state h0 = 0
    torch.testing.assert_close(scores[0], net.decoder(mu)[0])
    assert not torch.allclose(scores[0], scores[1])


# -- data: RecBole's sequential split ----------------------------------------------------

@pytest.mark.parametrize("rows", ["lean", "recbole"])
def test_next_item_tables_rebuild_recboles_sequences(tiny_config, tiny_root, rows):
    dm = RecBoleDataModule("tiny", model="SVAE", config_dict=_svae_config(tiny_config, MAX_ITEM_LIST_LENGTH=6,
                                                                          sequence_rows=rows))
    dm.setup()
    t, ds = dm.data, None
    assert t.form == "next_item"
    truth = _time_ordered_items(tiny_root)
    from recbole_ext.config import load_data

    ds = load_data(dm.config)[0]
    for token, items in list(truth.items())[:10]:
        u = int(ds.token2id(ds.uid_field, token))
        ids = [int(ds.token2id(ds.iid_field, i)) for i in items]
        assert t.train[u].tolist() == ids[:-2]                          # leave-one-out by time
        assert t.valid.positives[u].indices.tolist() == [ids[-2]]
        assert t.test.positives[u].indices.tolist() == [ids[-1]]
        assert t.test.inputs[u].tolist() == ids[:-1][-6:]               # truncated to the last 6, as RecBole does
        assert t.valid.inputs[u].tolist() == ids[:-2][-6:]
    # training windows: every step of every training sequence exactly once, <= 6 steps each
    steps = {}
    for w in t.train_examples():
        b = t.train_batch([w])
        u, n = int(b["user"][0]), int(b["length"][0])
        assert 1 <= n <= 6
        steps[u] = steps.get(u, 0) + n
    lengths = t.train.lengths()
    assert steps == {u: int(lengths[u]) - 1 for u in np.flatnonzero(lengths >= 2)}


def test_training_window_carries_its_targets_past_its_end(tiny_config):
    dm = RecBoleDataModule("tiny", model="SVAE", config_dict=_svae_config(tiny_config, MAX_ITEM_LIST_LENGTH=4))
    dm.setup()
    assert dm.data.lookahead == 4                              # the config's next_k
    SVAE(**SMALL, next_k=6).attach_data(dm.data)                # a model that looks further widens it
    first = dm.data.train_batch([0])
    u = int(first["user"][0])
    full = dm.data.train[u]
    assert first["length"].item() == 4
    assert first["seq"][0].tolist() == full[:10].tolist()         # 4 inputs + 6 targets beyond the window


def test_block_form_is_mvaes_split_in_time_order(tiny_config):
    cfg = dict(tiny_config, eval_args={"split": {"RS": [0.6, 0.2, 0.2]}, "order": "TO", "group_by": "user",
                                       "mode": "full"}, test_input="train_valid")
    seq = RecBoleDataModule("tiny", model="SVAE", config_dict=_svae_config(cfg))
    seq.setup()
    flat = RecBoleDataModule("tiny", model="MVAE", config_dict=cfg)
    flat.setup()
    s, m = seq.data, flat.data
    assert s.form == "block" and seq.config["MODEL_TYPE"].name == "GENERAL"
    for phase in ("valid", "test"):
        a, b = s.split(phase), m.split(phase)
        assert np.array_equal(a.users, b.users)
        assert (a.positives != b.positives).nnz == 0 and (a.exclude != b.exclude).nnz == 0
    u = int(s.test.users[0])
    assert sorted(s.train[u]) == sorted(m.train[u].indices)
    # test users are scored from train + valid (the first 80 %), in time order (read from the file)
    from recbole_ext.config import load_data

    ds = load_data(seq.config)[0]
    token = ds.id2token(ds.uid_field, u)
    ordered = [int(ds.token2id(ds.iid_field, i)) for i in _time_ordered_items(seq.config["data_path"].rsplit("/", 1)[0])[token]]
    n_input = len(s.train[u]) + len(s._valid_seqs[u])
    assert s.test.inputs[u].tolist() == ordered[:n_input] and n_input < len(ordered)
    assert set(flat.data.rows([u], "test")["input"].to_dense()[0].nonzero().view(-1).tolist()) == set(s.test.inputs[u].tolist())


def test_sequences_follow_timestamps_not_file_order(tmp_path, tiny_config):
    """Rows written newest first, with ties: sequences follow the timestamps (ties: file order)."""
    root = tmp_path / "data"
    (root / "shuffled").mkdir(parents=True)
    rows = []
    for u in range(12):
        for t in range(10):
            rows.append((f"u{u}", f"i{(u * 3 + t * 7) % 25}", 100 + 10 * (t // 2)))   # pairs share a timestamp
    lines = ["user_id:token\titem_id:token\ttimestamp:float"] + [f"{u}\t{i}\t{t}" for u, i, t in reversed(rows)]
    (root / "shuffled" / "shuffled.inter").write_text("\n".join(lines) + "\n")
    dm = RecBoleDataModule("shuffled", model="SVAE", config_dict=_svae_config(dict(tiny_config, data_path=str(root))))
    dm.setup()
    from recbole_ext.config import load_data

    ds = load_data(dm.config)[0]
    for u in range(12):
        mine = [r for r in reversed(rows) if r[0] == f"u{u}"]
        expected = [i for _, i, _ in sorted(mine, key=lambda r: r[2])]       # stable: ties keep file order
        uid = int(ds.token2id(ds.uid_field, f"u{u}"))
        got = [ds.id2token(ds.iid_field, i) for i in dm.data.train[uid]]
        assert got == expected[:-2]
        assert ds.id2token(ds.iid_field, int(dm.data.test.positives[uid].indices[0])) == expected[-1]


# -- both entry points ----------------------------------------------------------------------------

def test_block_form_gives_the_same_numbers_through_both_entry_points(tiny_config):
    # (the next-item form, SVAE's default, is in test_models.py's contract)
    extra = {"eval_args": {"split": {"RS": [0.6, 0.2, 0.2]}, "order": "TO", "group_by": "user", "mode": "full"},
             "test_input": "train_valid"}
    cfg = _svae_config(tiny_config, epochs=2, **extra)
    result = recbole_ext.run_recbole(model="SVAE", dataset="tiny", config_dict=cfg)
    assert result["test_result"]["ndcg@10"] > 0
    dm = RecBoleDataModule("tiny", model="SVAE", config_dict=cfg)
    dm.setup()
    assert_entry_points_agree(result, SVAE(n_items=dm.n_items, **SMALL), dm)


def test_lean_rows_carry_no_lists_and_give_recboles_rows_numbers(tiny_config):
    # the same rows, splits, training and scores as RecBole's augmented rows, without the copied lists
    from recbole_ext.config import load_data, make_config

    results, rows = {}, {}
    for mode in ("lean", "recbole"):
        cfg = _svae_config(tiny_config, epochs=2, sequence_rows=mode, MAX_ITEM_LIST_LENGTH=6,
                           metric_decimal_place=10)
        results[mode] = recbole_ext.run_recbole(model="SVAE", dataset="tiny", config_dict=cfg)
        _, train, valid, test = load_data(make_config("SVAE", "tiny", config_dict=cfg))
        rows[mode] = [(d.inter_feat["user_id"].tolist(), d.inter_feat["item_id"].tolist(), sorted(d.inter_feat.columns))
                      for d in (train._dataset, valid._dataset, test._dataset)]
    for (lu, li, lcols), (ru, ri, rcols) in zip(rows["lean"], rows["recbole"]):
        assert (lu, li) == (ru, ri)                                      # the same rows in every split
        assert "item_id_list" in rcols and "item_id_list" not in lcols and "timestamp_list" not in lcols
    for phase in ("best_valid_result", "test_result"):
        lean, recbole = results["lean"][phase], results["recbole"][phase]
        assert set(lean) == set(recbole)
        for key in lean:
            assert lean[key] == pytest.approx(recbole[key], abs=1e-6), (phase, key)


def test_recboles_own_run_recbole_runs_svae_as_a_sequential_model(tiny_config):
    from recbole.quick_start import run_recbole

    result = run_recbole(model="SVAE", dataset="tiny", config_dict=_svae_config(tiny_config, epochs=1))
    assert 0 < result["test_result"]["ndcg@10"] <= 1 and "novelty@10" in result["test_result"]
    # a non-leave-one-out split switches to the block form inside RecBole's own Config too
    block = run_recbole(model="SVAE", dataset="tiny", config_dict=_svae_config(
        tiny_config, epochs=1, eval_args={"split": {"RS": [0.6, 0.2, 0.2]}, "order": "TO", "group_by": "user",
                                          "mode": "full"}))
    assert 0 < block["test_result"]["ndcg@10"] <= 1


def test_exclude_history_masks_every_seen_item(tiny_config):
    dm = RecBoleDataModule("tiny", model="SVAE", config_dict=_svae_config(tiny_config, exclude_history=True))
    dm.setup()
    t = dm.data
    u = int(t.test.users[0])
    excluded = set(t.test.exclude[u].indices)
    assert excluded == set(t.train[u].tolist()) | set(t.test.inputs[u].tolist())
    assert not excluded & set(t.test.positives[u].indices)
    plain = RecBoleDataModule("tiny", model="SVAE", config_dict=_svae_config(tiny_config))
    plain.setup()
    assert "exclude" not in plain.data.rows([u], "test")      # RecBole's sequential rule: nothing excluded


def test_lightning_training_logs_the_kl_weight(tiny_config):
    dm = RecBoleDataModule("tiny", model="SVAE", config_dict=_svae_config(tiny_config))
    model = SVAE(**SMALL, total_anneal_steps=10)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=2, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False)
    trainer.fit(model, datamodule=dm)
    metrics = trainer.callback_metrics
    assert 0 < float(metrics["train/kl_weight_epoch"]) <= 0.2 + 1e-6
    assert torch.isfinite(metrics["train/loss_epoch"]) and "valid/ndcg@10" in metrics


# -- bad input --------------------------------------------------------------------------------

def test_dataset_without_timestamps_is_a_clear_error(tmp_path, tiny_config):
    root = tmp_path / "data"
    (root / "notime").mkdir(parents=True)
    lines = ["user_id:token\titem_id:token"] + [f"u{u}\ti{(u * 7 + j) % 30}" for u in range(20) for j in range(8)]
    (root / "notime" / "notime.inter").write_text("\n".join(lines) + "\n")
    cfg = _svae_config(dict(tiny_config, data_path=str(root)))
    with pytest.raises(ConfigError, match="notime.inter has no field 'timestamp'"):
        make_config("SVAE", "notime", config_dict=cfg)
    # a file that has the time field: it is loaded even where load_col leaves it out
    config = make_config("SVAE", "tiny", config_dict=dict(_svae_config(tiny_config),
                                                          load_col={"inter": ["user_id", "item_id"]}))
    assert config["load_col"]["inter"] == ["user_id", "item_id", "timestamp"]


def test_random_order_is_a_clear_error(tiny_config):
    cfg = _svae_config(tiny_config, eval_args={"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO",
                                               "group_by": "user", "mode": "full"})
    with pytest.raises(ConfigError, match="order is 'RO'; set it to 'TO'"):
        make_config("SVAE", "tiny", config_dict=cfg)


def test_unknown_test_input_is_a_clear_error(tiny_config):
    with pytest.raises(ConfigError, match="test_input='everything'"):
        make_config("MVAE", "tiny", config_dict=dict(tiny_config, test_input="everything"))


def test_command_line_error_is_one_line(tmp_path, tiny_root):
    out = subprocess.run([sys.executable, "-m", "recbole_ext", "--model=SVAE", "--dataset=tiny",
                          f"--data_path={tiny_root}", "--TIME_FIELD=when"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "sequential model" in out.stderr and "Traceback" not in out.stderr


# -- DDP -----------------------------------------------------------------------------------------

@pytest.mark.slow   # two processes, about 20 s; MVAE's two-process tests stay in the fast suite
def test_ddp_two_processes_give_identical_test_metrics(tmp_path):
    # equal for a reason that holds on any CPU: one user a batch and one thread a process, so every user
    # gets the same float scores in both runs; the metric states are float64 sums (scripts/ddp_test_metrics.py)
    root = str(write_tiny_dataset(str(tmp_path), name="odd", n_users=61, n_items=50))
    os.chdir(tmp_path)
    dm = RecBoleDataModule("odd", model="SVAE", config_dict=dict(FAST, data_path=root, topk=[5, 10]),
                           train_batch_size=16)
    model = SVAE(**SMALL)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=2, logger=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(model, datamodule=dm)
    ckpt = str(tmp_path / "odd.ckpt")
    trainer.save_checkpoint(ckpt)
    results = {}
    for devices in (1, 2):
        out = str(tmp_path / f"m{devices}.json")
        proc = subprocess.run([sys.executable, os.path.join(HERE, "scripts", "ddp_test_metrics.py"), ckpt, root,
                               str(devices), out, "SVAE"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[devices] = json.load(open(out))
    assert results[2]["world_size"] == 2 and len(results[1]["metrics"]) == 16   # 8 metrics at 2 cut-offs
    for key, value in results[1]["metrics"].items():
        assert results[2]["metrics"][key] == pytest.approx(value, abs=1e-6), key


@pytest.mark.parametrize("noise, scale", [("authors", 1.0), ("elbo", 0.5)])
def test_latent_noise_samples_with_exp_a_as_released_or_exp_half_a(noise, scale):
    # the encoder's second half a: the released code samples z = mu + eps * exp(a) (and its KL reads a
    # as log sigma^2); elbo samples z = mu + eps * exp(a / 2)
    torch.manual_seed(0)
    net = SeqVAE(20, embedding_size=8, rnn_size=8, hidden_size=8, latent=4, noise=noise).train()
    h = torch.zeros(20000, 8)
    with torch.no_grad():
        mu, a = net.encoder(h).chunk(2, dim=-1)
        z, mu2, a2 = net.latent(h)
    assert torch.equal(mu, mu2) and torch.equal(a, a2)
    spread = (z - mu).std(dim=0)
    assert torch.allclose(spread, torch.exp(scale * a[0]), rtol=0.03)
    net.eval()
    assert torch.equal(net.latent(h)[0], mu)                      # z = mu when scoring


def test_authors_initialisation_xavier_normal_in_the_mlp_layers():
    torch.manual_seed(0)
    net = SeqVAE(3000, embedding_size=16, rnn_size=200, hidden_size=150, latent=64)
    layers = [m for m in (*net.encoder, *net.decoder) if isinstance(m, torch.nn.Linear)]
    assert len(layers) == 4
    for layer in layers:
        fan_out, fan_in = layer.weight.shape
        assert layer.weight.std().item() == pytest.approx((2.0 / (fan_in + fan_out)) ** 0.5, rel=0.05)
        assert abs(layer.weight.mean().item()) < 0.01


def test_svae_defaults_are_the_authors_noise():
    assert SVAE().hparams.latent_noise == "authors"
    with pytest.raises(Exception, match="latent_noise"):
        SVAE(latent_noise="wide")


def _write_ragged_dataset(root, name="ragged"):
    """Users with 1 to 20 interactions (every boundary case of leave-one-out), distinct times."""
    folder = os.path.join(root, name)
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(3)
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for u in range(20):
        for t, i in enumerate(rng.choice(30, u + 1, replace=False)):
            lines.append(f"u{u}\ti{i}\t{1000 * u + t}")
    with open(os.path.join(folder, f"{name}.inter"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("split", ["valid_and_test", "test_only"])
def test_lean_rows_rebuild_recboles_lists_for_every_history_length(tmp_path, tiny_config, split):
    root = _write_ragged_dataset(str(tmp_path))
    base = {k: v for k, v in tiny_config.items() if k not in ("data_path", "train_batch_size")}
    data = {}
    for mode in ("lean", "recbole"):
        cfg = dict(base, data_path=root, sequence_rows=mode, MAX_ITEM_LIST_LENGTH=4, train_batch_size=4,
                   eval_args={"split": {"LS": split}, "order": "TO", "mode": "full"})
        dm = RecBoleDataModule("ragged", model="SVAE", config_dict=cfg)
        dm.setup()
        data[mode] = dm.data
    lean, recbole = data["lean"], data["recbole"]
    assert lean.list_field is None and recbole.list_field is not None
    for u in range(lean.n_users):
        assert lean.train[u].tolist() == recbole.train[u].tolist(), u
    phases = ("valid", "test") if split == "valid_and_test" else ("test",)
    for phase in phases:
        a, b = lean.split(phase), recbole.split(phase)
        assert a.users.tolist() == b.users.tolist() and len(a.users) > 10
        for u in a.users:
            assert a.inputs[int(u)].tolist() == b.inputs[int(u)].tolist(), (phase, u)


def test_lean_rows_score_as_recboles_rows_in_recboles_case_study(tiny_config):
    # RecBole's load_data_and_model + full_sort_scores: no phase is set, the rows alone give the inputs
    from recbole.utils.case_study import full_sort_scores

    from recbole_ext.compat import load_data_and_model

    scores = {}
    for mode in ("lean", "recbole"):
        cfg = _svae_config(tiny_config, epochs=1, sequence_rows=mode, checkpoint_dir=f"saved/{mode}")
        saved = recbole_ext.run_recbole(model="SVAE", dataset="tiny", config_dict=cfg)["saved_model_file"]
        config, model, dataset, _, _, test = load_data_and_model(saved)
        users = np.arange(1, 11)
        scores[mode] = full_sort_scores(users, model, test, device=config["device"])
    torch.testing.assert_close(scores["lean"], scores["recbole"])


def test_saving_lean_rows_is_refused(tiny_config):
    with pytest.raises(ConfigError, match="save_dataset: SVAE's next-item rows are lean"):
        make_config("SVAE", "tiny", config_dict=_svae_config(tiny_config, save_dataset=True))
    make_config("SVAE", "tiny", config_dict=_svae_config(tiny_config, save_dataset=True, sequence_rows="recbole"))


def test_recboles_next_item_loader_reads_eval_batch_size_as_scores_for_svae(tiny_config):
    # RecBole reads it as rows for sequential models: 409600 rows of all items at the ML-20M shape is 15 GB
    from recbole_ext.config import load_data, make_config

    cfg = _svae_config(tiny_config, eval_batch_size=800)           # 800 scores / 80 items: 10 rows a batch
    _, _, _, test = load_data(make_config("SVAE", "tiny", config_dict=cfg))
    assert test.is_sequential
    assert max(len(batch[0]) for batch in test) == 800 // test._dataset.item_num
