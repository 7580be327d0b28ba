"""Evaluate RecBole checkpoints in a fresh process, as a user would after training.

Usage: python evaluate_checkpoints.py OUT_JSON CHECKPOINT [CHECKPOINT ...]
Writes {checkpoint: test result dict} from ``load_data_and_model`` + ``trainer.evaluate``.
"""
import json
import sys

import recbole_ext  # noqa: F401  (the fixes and the models, before RecBole loads a checkpoint)
from recbole.quick_start import load_data_and_model
from recbole.utils import get_trainer

out = {}
for path in sys.argv[2:]:
    config, model, _, _, _, test_data = load_data_and_model(path)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    out[path] = {k: float(v) for k, v in trainer.evaluate(test_data, load_best_model=False).items()}
with open(sys.argv[1], "w") as f:
    json.dump(out, f)
