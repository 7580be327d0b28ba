"""RecBole's own ``recbole.quick_start.run(nproc=2)``, with ``import recbole_ext`` only under
``if __name__ == "__main__":`` (the spawned processes do not run that block).  Prints rank 0's test
NDCG@10 as JSON.

Usage: python recbole_run_main_guard.py DATA_ROOT PORT
"""
import os
import sys

os.environ["OMP_NUM_THREADS"] = "1"

if __name__ == "__main__":
    import json

    import recbole_ext  # noqa: F401
    from recbole.quick_start import run

    root, port = sys.argv[1:3]
    sys.argv = sys.argv[:1]                     # RecBole's Config reads --key=value from here
    config = {"data_path": root, "epochs": 1, "comet": False, "show_progress": False, "state": "ERROR",
              "use_gpu": False, "topk": [10], "valid_metric": "NDCG@10", "train_batch_size": 16,
              "mlp_hidden_size": [16], "latent_dimension": 8, "checkpoint_dir": os.path.join(root, "saved")}
    result = run("MVAE", "odd", config_dict=config, nproc=2, port=port)
    print(json.dumps({"ndcg@10": float(result["test_result"]["ndcg@10"])}))
