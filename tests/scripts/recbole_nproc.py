"""Train and test through ``recbole_ext.run`` with NPROC CPU processes (RecBole's ``nproc``; gloo);
writes rank 0's result dict to OUT_JSON.

Usage: python recbole_nproc.py MODEL DATA_ROOT NPROC PORT OUT_JSON CHECKPOINT_DIR

Evaluation scores one user a batch (``eval_batch_size`` = the number of item ids), so every user's
float32 scores are the same arithmetic in one process or several (scripts/ddp_test_metrics.py).
"""
import json
import os
import sys

os.environ["OMP_NUM_THREADS"] = "1"   # before torch is imported; the spawned processes inherit it

ARGS = sys.argv[1:7]                    # before conftest, which clears sys.argv for RecBole's Config
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))   # tests/, for conftest's small settings

import conftest  # noqa: E402
import recbole_ext  # noqa: E402


def main():
    name, root, nproc, port, out, saved = ARGS
    config = dict(conftest.FAST, data_path=root, epochs=2, eval_batch_size=51, train_batch_size=16,
                  topk=[5, 10], valid_metric="NDCG@10", metric_decimal_place=10, checkpoint_dir=saved)
    config.update(conftest.SMALL.get(name, {}))
    config.update(conftest.TINY_SETTINGS.get(name, {}))
    config["topk"] = [5, 10]
    result = recbole_ext.run(model=name, dataset="odd", config_dict=config, nproc=int(nproc), port=port)
    with open(out, "w") as f:
        json.dump({"test": {k: float(v) for k, v in result["test_result"].items()},
                   "checkpoint": result["saved_model_file"]}, f)


if __name__ == "__main__":   # RecBole's processes are spawned: they import this file
    main()
