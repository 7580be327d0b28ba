"""The GPU check: every model for one epoch on the GPUs present, through both entry points, in
float32 and bf16-mixed; DDP over all GPUs; MVAE beside RecBole's MultiVAE on the ML-20M shape.

    python benchmarks/gpu_check.py            # the whole check (sized for about 8 minutes on one H100)
    python benchmarks/gpu_check.py --quick    # MVAE, ML-1M shape, RecBole's door: about a minute

Rows, each in a fresh process (a failure is a row, not the end of the check):

1. each of MVAE, SVAE, CVAE, CFGAN, LARA on the synthetic ML-1M shape (benchmarks/synthetic.py), one
   epoch (train, validation, test), through RecBole's door (``run_recbole``'s steps, timed by
   benchmarks/scale.py) and through a Lightning script (``RecBoleDataModule`` + ``pl.Trainer``),
   each in ``precision`` 32-true and bf16-mixed;
2. MVAE in DDP over every GPU (RecBole's ``nproc``); with one GPU the row says so and is skipped;
3. MVAE and RecBole's MultiVAE on the ML-20M shape (MultiVAE: float32 only, RecBole's trainer has
   no precision setting).

The table (``--out``, default ``benchmarks/results/gpu_check.md``, rewritten after every row, so a
check that is stopped keeps what it measured): epoch seconds, validation and test seconds, peak GPU
memory, test NDCG@20, and for MVAE the achieved FLOP/s of its training epoch (the arithmetic of
:func:`mvae_epoch_flops`, against the card's dense peak where it is known).  ``--budget`` seconds
(default 480) bound the whole check: rows left when it is spent are listed as not run, in the order
above (so the ML-20M rows go first when time is short: ``--large-shape none`` skips them, or run them
alone with ``--shape ml-20m``).  The sizing is an estimate until the check has run on a GPU: about
10 s of start-up and data loading per row on the ML-1M shape, two minutes of RecBole's loading per
ML-20M row.

On a machine without a usable GPU it prints one line and exits 2 (``--allow-cpu`` runs the same
rows on the CPU, on ``--shape`` data: how the tests check this script).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)            # scale.py and synthetic.py, beside this file
OURS = ("MVAE", "SVAE", "CVAE", "CFGAN", "LARA")
PRECISIONS = ("32-true", "bf16-mixed")
#: dense peak FLOP/s of cards users train on (bf16 tensor cores, fp32 / tf32 as torch's default matmul
#: runs plain fp32): the datasheets' figures without sparsity
PEAKS = {"H100 PCIe": {"bf16-mixed": 756e12, "32-true": 51e12}, "H100 NVL": {"bf16-mixed": 835e12, "32-true": 60e12},
         "H100": {"bf16-mixed": 989e12, "32-true": 67e12}, "H200": {"bf16-mixed": 989e12, "32-true": 67e12},
         "A100": {"bf16-mixed": 312e12, "32-true": 19.5e12}}   # the first name the card's contains (SXM last)


def mvae_epoch_flops(users: int, items: int, nnz: int, hidden: list[int], latent: int) -> float:
    """Floating-point operations of one MVAE training epoch (every training user once): the encoder's
    first layer reads only the non-zero inputs (nnz x H), the other layers are dense; a backward pass
    costs about twice the forward (input and weight gradients)."""
    dims = [*hidden, 2 * latent]                       # encoder after the sparse first layer, then mu / logvar
    dense = sum(a * b for a, b in zip(dims[:-1], dims[1:]))
    decoder = [latent, *reversed(hidden), items]
    dense += sum(a * b for a, b in zip(decoder[:-1], decoder[1:]))
    forward = 2.0 * (nnz * hidden[0] + users * dense)
    return 3.0 * forward


def mvae_sizes() -> tuple[list[int], int]:
    """MVAE's default ``mlp_hidden_size`` and ``latent_dimension`` (the rows run at the defaults)."""
    from lightning_genrec import MODELS

    defaults = {h.name: h.default for h in MODELS["MVAE"].HYPERPARAMETERS}
    return list(defaults["mlp_hidden_size"]), int(defaults["latent_dimension"])


# -- the Lightning door: one child process ----------------------------------------------------------------

def lightning_one(model: str, settings: dict, precision: str, accelerator: str) -> dict:
    """One epoch of ``model`` in a Lightning script: fit (train + validation), then test."""
    out = {"model": model, "door": "Lightning", "precision": precision}
    try:
        import pytorch_lightning as pl
        import torch

        import recbole_ext  # noqa: F401
        from lightning_genrec import MODELS
        from recbole_ext import RecBoleDataModule

        dataset = settings.pop("dataset")
        start = time.perf_counter()
        dm = RecBoleDataModule(dataset, model=model, config_dict=settings)
        dm.setup()
        out["load_s"] = time.perf_counter() - start
        net = MODELS[model]()
        times = {}

        class Clock(pl.Callback):
            def on_train_epoch_start(self, trainer, pl_module):
                times["train_start"] = time.perf_counter()

            def on_validation_start(self, trainer, pl_module):
                if not trainer.sanity_checking:
                    times["train_s"] = time.perf_counter() - times["train_start"]
                    times["valid_start"] = time.perf_counter()

            def on_validation_end(self, trainer, pl_module):
                if not trainer.sanity_checking:
                    times["valid_s"] = time.perf_counter() - times["valid_start"]

        trainer = pl.Trainer(max_epochs=1, accelerator=accelerator, devices=1, precision=precision, logger=False,
                             enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                             num_sanity_val_steps=0, callbacks=[Clock()], default_root_dir=tempfile.mkdtemp())
        trainer.fit(net, datamodule=dm)
        out["train_epoch_s"], out["valid_s"] = times.get("train_s"), times.get("valid_s")
        start = time.perf_counter()
        result = trainer.test(net, datamodule=dm, verbose=False)[0]
        out["test_s"] = time.perf_counter() - start
        out["test_ndcg@20"] = float(result.get("test/ndcg@20", float("nan")))
        train = getattr(dm.data, "train", None)
        out.update(users=int(dm.data.n_users) - 1, items=int(dm.data.n_items) - 1,
                   train_inter=int(train.nnz) if hasattr(train, "nnz") else None)
        out["status"] = "ok"
        if torch.cuda.is_available():
            out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    except Exception as exc:   # a failure is a row
        out["status"], out["error"] = "error", f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}"
    return out


# -- the parent -----------------------------------------------------------------------------------------

def _child(cmd: list[str], timeout: float) -> dict:
    with tempfile.TemporaryDirectory() as work:
        try:
            proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=max(timeout, 1))
        except subprocess.TimeoutExpired:
            return {"status": "timeout", "error": f"timeout after {timeout:.0f} s"}
    row = {}
    for line in proc.stdout.splitlines():
        kind, _, payload = line.partition(" ")
        if kind in ("MEASURE", "RESULT"):
            row.update(json.loads(payload))
    if "status" not in row:
        tail = " | ".join([ln for ln in proc.stderr.splitlines() if ln.strip()][-2:])
        row.update(status="error", error=f"exit code {proc.returncode}: {tail[-300:]}")
    return row


def recbole_row(model: str, settings: dict, timeout: float) -> dict:
    """One row through RecBole's door (benchmarks/scale.py's timed child)."""
    import scale

    row = scale.run_child(model, settings, timeout, None)
    row["door"] = "RecBole"
    return row


def lightning_row(model: str, settings: dict, precision: str, accelerator: str, timeout: float) -> dict:
    return _child([sys.executable, os.path.abspath(__file__), "--lightning-one", model, json.dumps(settings),
                   precision, accelerator], timeout)


def ddp_row(settings: dict, gpus: int, timeout: float) -> dict:
    code = ("import json, sys, time; import recbole_ext; s = json.loads(sys.argv[1]); n = int(sys.argv[2]); "
            "t = time.perf_counter(); r = recbole_ext.run(model='MVAE', dataset=s.pop('dataset'), config_dict=s, "
            "nproc=n, port='29561'); print('RESULT ' + json.dumps({'status': 'ok', 'wall_s': time.perf_counter() - t, "
            "'test_ndcg@20': float(r['test_result']['ndcg@20'])}))")
    row = _child([sys.executable, "-c", code, json.dumps(settings), str(gpus)], timeout)
    row.update(model="MVAE", door=f"RecBole nproc={gpus}")
    return row


def shape_of(text: str):
    """``(name or None, Shape)``: a named shape of benchmarks/synthetic.py, or ``USERSxITEMSxINTERACTIONS``."""
    import synthetic

    if text in synthetic.SHAPES:
        return text, synthetic.SHAPES[text].resolved()
    try:
        users, items, interactions = (int(v) for v in text.split("x"))
    except ValueError:
        raise SystemExit(f"gpu_check: shape {text!r} is neither one of {', '.join(synthetic.SHAPES)} nor "
                         "USERSxITEMSxINTERACTIONS") from None
    return None, synthetic.Shape(users, items, interactions).resolved()


def settings_for(model: str, dataset: str, data: str, precision: str, gpu: bool) -> dict:
    s = {"dataset": dataset, "data_path": data, "seed": 2020, "state": "WARNING", "show_progress": False,
         "epochs": 1, "topk": [10, 20], "metrics": ["Recall", "NDCG"], "valid_metric": "NDCG@20",
         "use_gpu": gpu, "comet": False}
    if model in OURS:
        s["precision"] = precision
    else:
        s.pop("comet")
    if model == "LARA":
        s.pop("valid_metric")                                        # its own: item_ndcg@20
    return s


def _fmt(row: dict, key: str, spec: str) -> str:
    value = row.get(key)
    return format(value, spec) if isinstance(value, (int, float)) else "—"


def write_table(rows: list[dict], path: str, header: str) -> None:
    lines = [header, "", "| shape | model | door | precision | status | epoch s | valid s | test s | peak GPU MB "
             "| test NDCG@20 | MVAE FLOP/s (of peak) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        flops = r.get("achieved_flops")
        flop_text = "—" if flops is None else (f"{flops / 1e12:.2f} T" if flops >= 1e11 else f"{flops / 1e9:.1f} G") + (
            f" ({r['of_peak']:.1%})" if r.get("of_peak") is not None else "")
        status = r.get("status", "?") + (f": {r['error']}" if r.get("error") else "")
        lines.append(f"| {r.get('shape', '')} | {r.get('model', '')} | {r.get('door', '')} | {r.get('precision', '—')} "
                     f"| {status} | {_fmt(r, 'train_epoch_s', '.2f')} | {_fmt(r, 'valid_s', '.2f')} "
                     f"| {_fmt(r, 'test_s', '.2f')} | {_fmt(r, 'peak_gpu_mb', '.0f')} | {_fmt(r, 'test_ndcg@20', '.4f')} "
                     f"| {flop_text} |")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="MVAE on the ML-1M shape, RecBole's door, float32")
    parser.add_argument("--budget", type=float, default=480, help="seconds for the whole check (default 480)")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "gpu_check.md"))
    parser.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "lightning-genrec-synth"))
    parser.add_argument("--shape", default="ml-1m",
                        help="the per-model rows' shape: ml-1m (default), ml-20m or USERSxITEMSxINTERACTIONS")
    parser.add_argument("--large-shape", default="ml-20m", help="MVAE vs MultiVAE's shape ('none': skip)")
    parser.add_argument("--allow-cpu", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--lightning-one", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.lightning_one:
        model, settings, precision, accelerator = args.lightning_one
        print("RESULT " + json.dumps(lightning_one(model, json.loads(settings), precision, accelerator)), flush=True)
        return 0

    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if not gpus and not args.allow_cpu:
        print("gpu_check: no CUDA GPU is usable here (torch.cuda.is_available() is False); nothing was run.",
              file=sys.stderr)
        return 2
    start = time.perf_counter()
    gpu = gpus > 0
    card = torch.cuda.get_device_name(0) if gpu else "CPU"
    peaks = next((p for name, p in PEAKS.items() if name in card), None)
    import synthetic

    def data_set(shape_name: str) -> str:
        named, shape = shape_of(shape_name)
        name = synthetic.default_name(named, shape)
        if not os.path.isfile(os.path.join(args.data, name, f"{name}.inter")):
            print(f"generating {name} ...", flush=True)
            synthetic.generate(args.data, shape, 0, name, log=None)
        return name

    plan = []   # (shape, model, door, precision)
    if args.quick:
        plan.append((args.shape, "MVAE", "RecBole", "32-true"))
    else:
        for precision in PRECISIONS:
            for model in OURS:
                plan += [(args.shape, model, "RecBole", precision), (args.shape, model, "Lightning", precision)]
        plan.append((args.shape, "MVAE", "DDP", "32-true"))
        if args.large_shape != "none":
            plan += [(args.large_shape, "MVAE", "RecBole", "32-true"), (args.large_shape, "MultiVAE", "RecBole", "—"),
                     (args.large_shape, "MVAE", "RecBole", "bf16-mixed")]
    header = (f"# GPU check\n\nMade by `python benchmarks/gpu_check.py {' '.join(argv if argv is not None else sys.argv[1:])}` "
              f"on {card} ({gpus} GPU{'s' if gpus != 1 else ''}); one epoch per row, each in a fresh process.")
    rows: list[dict] = []
    for shape_name, model, door, precision in plan:
        left = args.budget - (time.perf_counter() - start)
        row = {"shape": shape_name, "model": model, "door": door, "precision": precision}
        if left <= 5:
            row.update(status="not run", error="the --budget was spent")
        elif door == "DDP" and gpus < 2:
            row.update(status="skipped", error=f"{gpus} GPU{'s' if gpus != 1 else ''}: DDP needs two (nccl "
                                               "takes one process per GPU)")
        else:
            dataset = data_set(shape_name)
            settings = settings_for(model, dataset, args.data, precision, gpu)
            if door == "RecBole":
                row.update(recbole_row(model, settings, left))
            elif door == "Lightning":
                row.update(lightning_row(model, settings, precision, "gpu" if gpu else "cpu", left))
            else:
                row.update(ddp_row(settings, gpus, left))
            row.update(shape=shape_name, door="RecBole nproc" if door == "DDP" else door, precision=precision)
            if model == "MVAE" and row.get("train_epoch_s") and row.get("train_inter") and row.get("users"):
                flops = mvae_epoch_flops(int(row["users"]), int(row["items"]), int(row["train_inter"]),
                                         *mvae_sizes())
                row["achieved_flops"] = flops / row["train_epoch_s"]
                peak = (peaks or {}).get(precision)
                row["of_peak"] = row["achieved_flops"] / peak if peak else None
        rows.append(row)
        print(f"{shape_name:6s} {model:8s} {row.get('door', door):16s} {precision:10s} {row.get('status')}"
              f"  epoch {_fmt(row, 'train_epoch_s', '.2f')} s  NDCG@20 {_fmt(row, 'test_ndcg@20', '.4f')}"
              + (f"  {row['error']}" if row.get("error") else ""), flush=True)
        write_table(rows, args.out, header)
    print(f"gpu_check: {len(rows)} rows in {time.perf_counter() - start:.0f} s; table: {args.out}")
    return 0 if all(r.get("status") in ("ok", "skipped") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
