"""MVAE on ml-100k (RecBole's default split, 3 epochs) through ``recbole_ext.run`` with NPROC CPU processes;
writes rank 0's test result and its optimizer steps to OUT_JSON.

Usage: python ml100k_nproc.py NPROC PORT OUT_JSON
"""
import json
import os
import sys

os.environ["OMP_NUM_THREADS"] = "1"   # before torch is imported; the spawned processes inherit it

ARGS = sys.argv[1:4]
sys.argv = sys.argv[:1]                 # RecBole's Config reads --key=value from here

import recbole_ext  # noqa: E402


def main():
    nproc, port, out = ARGS
    config = {"epochs": 3, "comet": False, "show_progress": False, "state": "ERROR", "use_gpu": False,
              "train_batch_size": 128, "topk": [20], "metrics": ["Recall", "NDCG"], "valid_metric": "NDCG@20", "stopping_step": 10,
              "stop_after_anneal": False, "checkpoint_dir": os.path.join(os.getcwd(), f"saved{nproc}")}
    result = recbole_ext.run(model="MVAE", dataset="ml-100k", config_dict=config, nproc=int(nproc), port=port)
    with open(out, "w") as f:
        json.dump({"test": {k: float(v) for k, v in result["test_result"].items()},
                   "steps": result.get("train_steps")}, f)


if __name__ == "__main__":   # RecBole's processes are spawned: they import this file
    main()
