"""The GPU check: MVAE and RecBole's MultiVAE on the ML-20M shape, one epoch each on one GPU,
through RecBole's entry point; seconds per epoch, evaluation seconds and peak GPU memory.

Run as is on a machine with a CUDA GPU (nothing to configure; the data are generated first,
about a minute)::

    python benchmarks/gpu_check.py            # writes benchmarks/results/gpu_ml-20m.{csv,md}

It is the scale benchmark (benchmarks/scale.py) with these rows; extra arguments are passed on
(e.g. ``--models MVAE MultiVAE CFGAN``, ``--epochs 2``).  On a machine without a usable GPU it
says so and stops: the CPU numbers are the scale benchmark's own.
"""
from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv: list[str]) -> int:
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU is usable here (torch.cuda.is_available() is False); "
              "run benchmarks/scale.py for CPU numbers.", file=sys.stderr)
        return 2
    print(f"GPU: {torch.cuda.get_device_name(0)}", flush=True)
    defaults = ["--shape", "ml-20m", "--models", "MVAE", "MultiVAE", "--epochs", "1",
                "--out", os.path.join(HERE, "results", "gpu_ml-20m")]
    sys.argv = [os.path.join(HERE, "scale.py"), *defaults, *argv]
    sys.path.insert(0, HERE)
    import scale

    scale.main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
