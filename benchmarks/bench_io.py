"""What the part-based benchmark scripts share: one run per fresh subprocess, results CSVs
that can be merged (``--append``) and re-rendered (``--render``), mean ± std cells."""
from __future__ import annotations

import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile


def run_subprocess(script: str, args: list[str]) -> dict:
    """``python script *args`` in an empty temporary directory; the dict it prints after ``RESULT ``.
    A ``--data_path`` value is made absolute first: it was given relative to the caller's folder."""
    args = [os.path.abspath(a) if i and args[i - 1] == "--data_path" else a for i, a in enumerate(args)]
    with tempfile.TemporaryDirectory() as work:
        out = subprocess.run([sys.executable, os.path.abspath(script), *args], cwd=work, capture_output=True,
                             text=True)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    if out.returncode != 0 or not line:
        sys.stderr.write(out.stdout[-3000:] + out.stderr[-3000:])
        raise SystemExit(f"{os.path.basename(script)} {' '.join(args)} failed")
    return json.loads(line[0][7:])


def number(v: str):
    """A CSV cell back as int / float where it is one."""
    try:
        return int(v)
    except ValueError:
        try:
            return float(v)
        except ValueError:
            return v


def read_rows(path: str) -> list[dict]:
    with open(path) as f:
        return [{k: number(v) for k, v in r.items() if v != ""} for r in csv.DictReader(f)]


def write_csv(rows: list[dict], path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def merge(old: list[dict], new: list[dict]) -> list[dict]:
    """``old`` rows without the (part, model, seed) keys of ``new``, then ``new``."""
    keys = {(r["part"], r["model"], r["seed"]) for r in new}
    return [r for r in old if (r["part"], r["model"], r["seed"]) not in keys] + new



def mean_std(rows, part, model, key, fmt="%.4f") -> str:
    vals = [r[key] for r in rows if r["part"] == part and r["model"] == model and key in r]
    if not vals:
        return "-"
    if len(vals) == 1:
        return (fmt % vals[0]) + " (1 seed)"
    return (fmt + " ± " + fmt) % (statistics.mean(vals), statistics.stdev(vals))




def run_rows(script: str, jobs, extra_args: list[str] | None = None, key: str = "ndcg@20") -> list[dict]:
    """Run ``script --one PART MODEL SEED`` for each ``(part, model, seed)`` of ``jobs``, one
    after another in fresh processes; print a progress line per row; return the rows."""
    rows = []
    for part, model, seed in jobs:
        row = run_subprocess(script, ["--one", part, model, str(seed), *(extra_args or [])])
        rows.append(row)
        print(f"{part:5s} {model:12s} seed {seed}: {key} {row[key]:.4f} fit {row['fit_s']:.1f}s "
              f"epochs {row['epochs']}", flush=True)
    return rows


def recorded_command(out: str) -> str | None:
    """The ``Command:`` line of an existing .md (what made the rows being merged or re-rendered)."""
    try:
        with open(out + ".md") as f:
            return next((line[len("Command: "):].strip() for line in f if line.startswith("Command: ")), None)
    except OSError:
        return None
