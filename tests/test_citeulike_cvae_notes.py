"""benchmarks/citeulike_cvae.py's notes that are read from the rows: variant rows against their base
model's, and the cells not run."""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import citeulike_cvae  # noqa: E402


def _row(part, model, seed, r50, r100, r300):
    return {"part": part, "model": model, "seed": seed, "recall@50": r50, "recall@100": r100, "recall@300": r300}


def test_a_variant_is_compared_with_its_base_model_seed_by_seed_only_where_both_ran():
    rows = [_row("p1", "CVAE", 2020, 0.05, 0.10, 0.20), _row("p1", "CVAE-layerwise", 2020, 0.06, 0.10, 0.18),
            _row("p1", "CVAE", 2021, 0.04, 0.08, 0.30), _row("p1", "CVAE-layerwise", 2022, 0.5, 0.5, 0.5),
            _row("p10fixed", "CVAE-layerwise", 2020, 0.1, 0.1, 0.1),
            _row("p10", "CVAE", 2020, 0.0, 0.1, 0.2), _row("p10", "CVAE-layerwise", 2020, 0.1, 0.1, 0.1)]
    lines = citeulike_cvae.variant_notes(rows)
    assert lines == ["- **p1 CVAE-layerwise / CVAE**, Recall@50 / 100 / 300 on the same seed: "
                     "2020: 1.20x / 1.00x / 0.90x.",
                     "- **p10 CVAE-layerwise / CVAE**, Recall@50 / 100 / 300 on the same seed: "
                     "2020: - / 1.00x / 0.50x.",
                     "- **p10fixed CVAE-layerwise / CVAE**: no seed has both rows."]
    assert citeulike_cvae.variant_notes([r for r in rows if r["model"] == "CVAE"]) == []


@pytest.mark.parametrize("variant", sorted(citeulike_cvae.VARIANTS))
def test_variants_are_not_default_rows_and_name_a_real_row(variant):
    base, settings = citeulike_cvae.VARIANTS[variant]
    assert variant not in citeulike_cvae.DEFAULT_MODELS and base in citeulike_cvae.DEFAULT_MODELS and settings
    assert citeulike_cvae.base_model(variant) == base and citeulike_cvae.base_model(base) == base
