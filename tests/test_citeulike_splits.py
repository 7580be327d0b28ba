"""benchmarks/citeulike_splits.py: the CVAE paper's ``.dat`` split files become RecBole benchmark
files (train / valid / test ``.inter``) without losing, duplicating or moving test pairs, and a
header-only validation part loads through RecBole (the P = 1 protocol has no validation)."""
from __future__ import annotations

import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("citeulike_splits",
                                               os.path.join(ROOT, "benchmarks", "citeulike_splits.py"))
splits = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(splits)


def _dat(path, rows):
    with open(path, "w") as f:
        for items in rows:
            f.write(" ".join(map(str, [len(items), *items])) + "\n")
    return str(path)


def _pairs(path):
    with open(path) as f:
        assert f.readline() == "user_id:token\titem_id:token\n"
        return [tuple(map(int, line.split("\t"))) for line in f]


TRAIN = [[3, 0], [1], [4, 2, 0], [5, 1]]
TEST = [[1, 5], [0, 2, 3], [1], [0]]


def test_pairs_are_written_per_user_in_file_order(tmp_path):
    counts = splits.write_benchmark(_dat(tmp_path / "tr.dat", TRAIN), _dat(tmp_path / "te.dat", TEST),
                                    str(tmp_path / "ds"), "ds")
    base = tmp_path / "ds" / "ds"
    assert _pairs(f"{base}.train.inter") == [(0, 3), (0, 0), (1, 1), (2, 4), (2, 2), (2, 0), (3, 5), (3, 1)]
    assert _pairs(f"{base}.test.inter") == [(0, 1), (0, 5), (1, 0), (1, 2), (1, 3), (2, 1), (3, 0)]
    assert _pairs(f"{base}.valid.inter") == []
    assert counts == {"users": 4, "train": 8, "valid": 0, "test": 7, "overlap": 0}
    assert not os.path.exists(f"{base}.item")


def test_validation_takes_training_items_only_and_leaves_test_untouched(tmp_path):
    item = tmp_path / "x.item"
    item.write_text("item_id:token\ttitle:token_seq\n0\ta b\n")
    counts = splits.write_benchmark(_dat(tmp_path / "tr.dat", TRAIN), _dat(tmp_path / "te.dat", TEST),
                                    str(tmp_path / "ds"), "ds", item_file=str(item), valid_share=1.0, split_seed=3)
    base = tmp_path / "ds" / "ds"
    train, valid, test = (_pairs(f"{base}.{p}.inter") for p in ("train", "valid", "test"))
    assert test == [(u, i) for u, items in enumerate(TEST) for i in items]
    # every user with >= 2 training items (0, 2, 3) gives exactly one; user 1 (one item) gives none
    assert sorted(u for u, _ in valid) == [0, 2, 3]
    assert sorted(train + valid) == sorted((u, i) for u, items in enumerate(TRAIN) for i in items)
    assert counts["train"] + counts["valid"] == 8 and counts["valid"] == 3
    assert (tmp_path / "ds" / "ds.item").read_text() == item.read_text()
    again = tmp_path / "again"
    splits.write_benchmark(_dat(tmp_path / "tr.dat", TRAIN), _dat(tmp_path / "te.dat", TEST), str(again), "ds",
                           valid_share=1.0, split_seed=3)
    assert _pairs(again / "ds.valid.inter") == valid                    # the split seed fixes the draw


def test_valid_share_counts_eligible_users():
    train = [[1, 2]] * 8 + [[7]] * 4
    new_train, valid = splits.carve_validation(train, 0.25, split_seed=0)
    assert sum(len(v) for v in valid) == 2                               # a quarter of the 8 eligible users
    assert all(not valid[u] for u in range(8, 12))
    assert sum(map(len, new_train)) + 2 == sum(map(len, train))


@pytest.mark.parametrize("rows, message", [
    ("2 1\n", "says 2 items but lists 1"),
    ("1 x\n", "not integers"),
    ("2 4 4\n", "repeats"),
    ("1 -3\n", "negative"),
    ("1 0\n\n", "empty line"),
])
def test_bad_dat_lines_are_named(tmp_path, rows, message):
    path = tmp_path / "bad.dat"
    path.write_text(rows)
    with pytest.raises(ValueError, match=message):
        splits.read_dat(str(path))


def test_mismatched_or_overlapping_files_are_refused(tmp_path):
    tr = _dat(tmp_path / "tr.dat", [[1], [2]])
    with pytest.raises(ValueError, match="has 2 users but"):
        splits.write_benchmark(tr, _dat(tmp_path / "te.dat", [[3]]), str(tmp_path / "a"), "a")
    with pytest.raises(ValueError, match="1 \\(user, item\\) pairs are both"):
        splits.write_benchmark(tr, _dat(tmp_path / "te2.dat", [[1, 4], [3]]), str(tmp_path / "b"), "b")


def test_header_only_validation_part_loads_and_trains_without_validation(tmp_path):
    """RecBole's benchmark_filename needs three files; P = 1 has nothing to validate on, so its
    valid part is header-only: it loads (a header-only *train* part is still an error), the model
    trains for its fixed epochs without validating, and the test part is scored."""
    from recbole_ext.config import load_data, make_config
    from lightning_genrec.errors import DataFileError

    train = [[u % 7, (u + 3) % 7] for u in range(12)]
    test = [[(u + 5) % 7] for u in range(12)]
    splits.write_benchmark(_dat(tmp_path / "tr.dat", train), _dat(tmp_path / "te.dat", test),
                           str(tmp_path / "tiny"), "tiny")
    cfg = {"data_path": str(tmp_path), "benchmark_filename": ["train", "valid", "test"],
           "load_col": {"inter": ["user_id", "item_id"]}, "eval_step": 0, "epochs": 2, "comet": False,
           "eval_args": {"split": {"LS": "test_only"}, "order": "RO", "group_by": "user", "mode": "full"},
           "topk": [2], "valid_metric": "Recall@2", "state": "WARNING", "use_gpu": False}
    config = make_config("MVAE", "tiny", [], cfg)
    _, train_data, valid_data, test_data = load_data(config)
    assert len(train_data._dataset.inter_feat) == 24 and len(valid_data._dataset.inter_feat) == 0
    assert len(test_data._dataset.inter_feat) == 12

    from recbole.utils import get_model, get_trainer

    net = get_model("MVAE")(config, train_data._dataset)
    trainer = get_trainer(config["MODEL_TYPE"], "MVAE")(config, net)
    trainer.fit(train_data, valid_data, saved=False, show_progress=False)
    result = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
    assert 0.0 <= result["recall@2"] <= 1.0

    (tmp_path / "tiny" / "tiny.train.inter").write_text("user_id:token\titem_id:token\n")
    with pytest.raises(DataFileError, match="tiny.train.inter has a header but no data lines"):
        load_data(make_config("MVAE", "tiny", [], cfg))
