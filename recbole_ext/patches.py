"""Every change ``import recbole_ext`` makes to RecBole (and to the libraries it runs on), in one list.

Each :class:`Change` says which attributes it sets, what it does, why, which RecBole issue or
``shared/RECBOLE_NOTES.md`` item it answers, and which test pins it.  :func:`apply` installs the
whole list by one mechanism: each target ``module:Class.attr`` is set to ``make(original, attr)``,
where ``original`` is RecBole's own value (:data:`MISSING` where the attribute did not exist).
No target appears twice, so no change wraps another's; a behaviour that needs two of our
concerns in one RecBole method (the two evaluation protocols in ``Dataset.build``) is one
replacement that dispatches.  ``tests/test_patches.py`` checks this list against what is really
set in RecBole's modules, and docs/compatibility.md's table is generated from it
(``python -m recbole_ext.defaults``).

Targets in a module RecBole imports only on demand (:data:`ON_IMPORT`: ``recbole.quick_start``,
which imports ray) are installed when that module is first imported, so ``import recbole_ext`` imports
no ray.  This module imports nothing heavy: ``make`` is a ``"module:function"`` string,
resolved when the change is installed.
"""
from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass

from lightning_genrec.models import MODELS

#: ``original`` for a target attribute that did not exist before the change
MISSING = object()
#: modules whose targets are installed when the module is first imported (they import ray)
ON_IMPORT = ("recbole.quick_start",)


@dataclass(frozen=True)
class Change:
    name: str
    targets: tuple[str, ...]      # "module:attr", "module:Class.attr" or "module:dict[key]"
    make: str                     # "module:function"; function(original, attr) -> the value to set
    #                               (attr: the last name of the target, "dict[key]" for an entry)
    what: str
    why: str
    ref: str                      # a RecBole issue, a RECBOLE_NOTES.md item, or "ours"
    test: str                     # the test that fails without it
    adds: bool = False            # its targets are new names (else each must exist: a misspelt one fails)


def _models() -> tuple[str, ...]:
    return tuple(MODELS)


_NUMPY = ("bool8", "float_", "complex_", "unicode_", "float", "int")
_ENSURE_DIR = ("recbole.utils.utils", "recbole.utils", "recbole.utils.logger", "recbole.trainer.trainer",
               "recbole.data.dataset.dataset", "recbole.data.utils")
_GET_MODEL = ("recbole.utils.utils", "recbole.utils", "recbole.config.configurator")
_METRICS = ("novelty", "truncatedrecall")
_DS, _LOADERS = "recbole.data.dataset.dataset", "recbole.data.dataloader.general_dataloader"
_T = "tests/"


def _changes() -> list[Change]:
    models = _models()
    return [
        # -- today's stack -------------------------------------------------------------------------
        Change("numpy aliases", tuple(f"numpy:{n}" for n in _NUMPY), "recbole_ext.compat:numpy_alias",
               "restores np.bool8, np.float_, np.complex_, np.unicode_, np.float and np.int where numpy lacks them",
               "ray 2.6.3 and RecBole use names numpy 1.24 / 2.0 removed; a checkpoint's Config is unpickled "
               "without running RecBole's own np.float alias", "RECBOLE_NOTES 2, 3, 8",
               _T + "test_compat.py::test_item3_config_builds_on_numpy2", adds=True),
        Change("trusted checkpoint loading",
               ("recbole.trainer.trainer:torch",), "recbole_ext.compat:trusted_torch",
               "RecBole's trainer loads its own checkpoints with weights_only=False; torch elsewhere keeps its safe "
               "default", "torch >= 2.6 reads checkpoints weights-only and rejects RecBole's (its Config, pickle "
               "protocol 4)", "RECBOLE_NOTES 6", _T + "test_compat.py::test_item6_recbole_checkpoint_loads_back"),
        Change("load_data_and_model",
               ("recbole.quick_start.quick_start:load_data_and_model", "recbole.quick_start:load_data_and_model"),
               "recbole_ext.compat:checked_load_data_and_model",
               "loads a trusted RecBole checkpoint; anything else is one CheckpointError line",
               "RecBole's imports torch inside the function (out of reach of the trainer's fix)", "RECBOLE_NOTES 6",
               _T + "test_bad_input.py::test_files_that_are_not_recbole_checkpoints_are_named"),
        Change("collector", ("recbole.evaluator.collector:Collector.get_data_struct",
                             "recbole.evaluator.collector:DataStruct.update_tensor",
                             "recbole.evaluator.collector:DataStruct.__getitem__"),
               "recbole_ext.compat:collector_fix",
               "moves only tensors to the CPU; keeps evaluation batches in a list, joined once when read",
               "ItemCoverage / GiniIndex crashed on .cpu() of an int; joining at every batch was quadratic",
               "RECBOLE_NOTES 7", _T + "test_compat.py::test_item10_evaluation_batches_are_joined_once_when_read"),
        Change("float64 time", (f"{_DS}:Dataset._change_feat_format",), "recbole_ext.compat:float64_time",
               "the time field keeps float64 (not when numerical_features makes it a [value, 1] pair)",
               "as float32, Unix seconds resolve to 64-128 s and time-ordered splits keep ties in file order",
               "RecBole #1653, #2204", _T + "test_compat.py::test_item12_time_order_is_exact_with_unix_seconds"),
        Change("ensure_dir race", tuple(f"{m}:ensure_dir" for m in _ENSURE_DIR), "recbole_ext.compat:ensure_dir_fix",
               "creates folders with exist_ok", "processes started together (nproc) raced to create ./log",
               "ours (nproc)",
               _T + "test_compat.py::test_item9_ensure_dir_survives_a_process_creating_the_folder_first"),
        Change("exhaustive search", ("recbole.trainer.hyper_tuning:exhaustive_search",),
               "recbole_ext.compat:exhaustive_search_fix",
               "run_hyper's default search draws with a numpy Generator",
               "hyperopt >= 0.2.7 draws with Generator.integers: the first trial failed", "ours (hyperopt 0.2.7)",
               _T + "test_compat.py::test_exhaustive_search_tries_every_point_once_with_todays_hyperopt"),
        Change("scipy dok_matrix._update", ("scipy.sparse._dok:_dok_base._update",),
               "recbole_ext.compat:dok_update",
               "gives scipy's dok matrices back the _update(dict) RecBole's graph models call",
               "scipy 1.13 removed it: LightGCN, NGCF, NCL, GCMC, SpectralCF, KGIN and MCCLK failed to build",
               "RecBole #2034", _T + "test_compat.py::test_recbole_graph_models_build_and_train_on_todays_scipy",
               adds=True),
        # -- RecBole's behaviour, where it would hang, crash or mislead ------------------------------
        Change("no download", (f"{_DS}:Dataset._download",), "recbole_ext.compat:no_download",
               "a missing dataset folder is a DatasetNotFoundError naming it",
               "RecBole tries to download it: a hang on a machine without network", "ours",
               _T + "test_compat.py::test_missing_dataset_fails_fast_instead_of_downloading"),
        Change("get_model", tuple(f"{m}:get_model" for m in _GET_MODEL) + ("recbole.quick_start.quick_start:get_model",),
               "recbole_ext.model_names:checked_get_model",
               "an unknown model name is an UnknownModelError naming RecBole's models, ours and the closest",
               "RecBole's search falls through to its exlib models and fails importing lightgbm", "ours",
               _T + "test_recbole_entry.py::test_recboles_own_get_model_names_an_unknown_model"),
        Change("atomic files", (f"{_DS}:Dataset._load_feat",), "recbole_ext.atomic:checked_load_feat",
               "checks each atomic file as RecBole reads it: an error where RecBole would crash (a header "
               "without types, an empty file, a float that does not parse), with the file and line; a warning, "
               "once per file, for lines RecBole pads or cuts (too few or too many columns)",
               "RecBole's own messages name no file or line", "ours",
               _T + "test_bad_input.py::test_broken_atomic_files_name_the_file_and_line"),
        Change("duplicate interactions", (f"{_DS}:Dataset._remove_duplication",),
               "recbole_ext.atomic:warn_duplicates",
               "with rm_dup_inter unset, a warning counts repeated (user, item) rows and names the setting",
               "RecBole keeps them silently (a file with every row three times: NDCG@10 0.11 against 0.19)", "ours",
               _T + "test_bad_input.py::test_repeated_interactions_are_counted_in_a_warning"),
        Change("quiet console", ("recbole.utils.logger:init_logger", "recbole.utils:init_logger",
                                 "recbole.quick_start.quick_start:init_logger"),
               "recbole_ext.console:quiet_init_logger",
               "for lightning-genrec models the screen shows warnings and one line per validation; the "
               "configuration dump, the model printout and the rest go to the log file (verbose: true or "
               "state: DEBUG shows all); RecBole's own models keep RecBole's output",
               "a 2-epoch run printed about 170 lines", "ours",
               _T + "test_recbole_entry.py::test_a_two_epoch_command_line_run_is_quiet"),
        # -- configuration -------------------------------------------------------------------------
        Change("model defaults", ("recbole.config.configurator:Config._load_internal_config_dict",),
               "recbole_ext.model_files:load_model_defaults",
               "our models read configs/trainer.yaml and configs/<model>.yaml where RecBole reads its model YAML",
               "RecBole's Config knows only its own properties/model/ folder", "ours",
               _T + "test_defaults.py"),
        Change("config checks", ("recbole.config.configurator:Config._set_default_parameters",),
               "recbole_ext.model_rules:checked_defaults",
               "runs our models' config checks and the held-out user check inside Config; an explicit "
               "data_path that holds an ml-100k folder is used for ml-100k (otherwise RecBole's copy)",
               "so every entry point refuses bad settings before data loads; RecBole ignores data_path for "
               "ml-100k", "ours", _T + "test_compat.py::test_data_path_for_ml100k_as_recbole_unless_it_holds_one"),
        # -- several processes ---------------------------------------------------------------------
        Change("CPU processes", ("recbole.config.configurator:Config._init_device",),
               "recbole_ext.processes:cpu_init_device",
               "lightning-genrec models' processes join with gloo on the CPU when no GPU is usable",
               "RecBole joins with nccl on CUDA only", "ours",
               _T + "test_multiprocess.py::test_recbole_nproc_2_trains_and_tests_as_one_process_evaluates_its_weights"),
        Change("evaluation over processes", ("recbole.data.dataloader.abstract_dataloader:AbstractDataLoader.__init__",
                                             "recbole.evaluator.evaluator:Evaluator.evaluate",
                                             "recbole.trainer.trainer:Trainer._map_reduce"),
               "recbole_ext.processes:one_process_evaluation",
               "evaluation users are sharded without repeats and the metrics computed once on all of them",
               "RecBole's DistributedSampler repeats users and its average weights processes by batches",
               "ours", _T + "test_multiprocess.py"),
        Change("spawned processes", ("recbole.quick_start.quick_start:run_recboles", "recbole.quick_start:run_recboles"),
               "recbole_ext.processes:spawned_run_recboles",
               "the processes run(nproc=N) spawns import recbole_ext before RecBole",
               "a spawned process unpickles RecBole's function and imports ray before any fix: np.bool8",
               "ours", _T + "test_multiprocess.py::test_recboles_run_nproc_works_with_recbole_ext_imported_under_main",
               ),
        # -- the protocols and sequences -------------------------------------------------------------
        Change("protocol build", (f"{_DS}:Dataset.build",), "recbole_ext.protocols:build",
               "the cold-start item split (cold_item_split) or the held-out user split (heldout_user_split); "
               "RecBole's own build otherwise", "protocols RecBole lacks", "ours",
               _T + "test_cold_start.py, test_heldout_users.py"),
        Change("filled item floats", (f"{_DS}:Dataset._fill_nan",), "recbole_ext.cold_start:record_filled_floats",
               "records which items' float fields RecBole filled (dataset.filled_item_floats); item content "
               "refills them from the items it is fitted on",
               "RecBole fills a missing float with the mean over every item, held-out ones included", "ours",
               _T + "test_cvae.py::test_held_out_items_do_not_reach_training_content_through_recboles_missing_value_fill"),
        Change("protocol loaders", (f"{_LOADERS}:FullSortEvalDataLoader.__init__",
                                    f"{_LOADERS}:FullSortEvalDataLoader.collate_fn",
                                    "recbole.utils.case_study:full_sort_scores"),
               "recbole_ext.protocols:loader",
               "full-ranking loaders rank only a protocol's candidate items and exclude a held-out user's fold-in",
               "protocols RecBole lacks", "ours", _T + "test_cold_start.py, test_heldout_users.py"),
        Change("held-out fold-in", ("recbole.model.general_recommender.ease:EASE.__init__",
                                    "recbole.model.general_recommender.itemknn:ItemKNN.__init__",
                                    "recbole.model.general_recommender.multivae:MultiVAE.__init__",
                                    "recbole.model.general_recommender.multidae:MultiDAE.__init__",
                                    "recbole.model.general_recommender.multivae:MultiVAE.calculate_loss",
                                    "recbole.model.general_recommender.multidae:MultiDAE.calculate_loss"),
               "recbole_ext.heldout_users:fold_in_models",
               "under heldout_user_split, EASE, ItemKNN, MultiVAE and MultiDAE score held-out users from their "
               "fold-in; the autoencoders still learn from training users only", "the held-out user protocol",
               "ours", _T + "test_heldout_users.py"),
        Change("lean sequences", ("recbole.data.dataset.sequential_dataset:SequentialDataset.data_augmentation",
                                  f"{_LOADERS}:FullSortEvalDataLoader._init_batch_size_and_step"),
               "recbole_ext.lean_sequences:lean",
               "our sequential models get one row per target, not RecBole's padded item lists",
               "RecBole's lists grow as interactions x MAX_ITEM_LIST_LENGTH", "ours", _T + "test_svae.py"),
        # -- what RecBole learns ---------------------------------------------------------------------
        Change("metrics", tuple(f"recbole.evaluator.register:{d}[{m}]" for d in
                                ("metrics_dict", "metric_information", "metric_types") for m in _METRICS),
               "recbole_ext.metrics:registered",
               "RecBole's evaluator knows Novelty and TruncatedRecall", "metrics RecBole lacks", "ours",
               _T + "test_metrics.py", adds=True),
        Change("models", tuple(f"sys:modules[recbole.model.general_recommender.{m.lower()}]" for m in models)
               + tuple(f"recbole.trainer:{m}Trainer" for m in models),
               "recbole_ext.registry:registered",
               "RecBole's get_model and get_trainer find lightning-genrec's models and their Lightning trainer",
               "RecBole looks for models only in its own packages", "ours", _T + "test_recbole_entry.py", adds=True),
    ]


#: the target -> the value installed there
INSTALLED: dict[str, object] = {}
#: the target -> what was there before (RecBole's own; :data:`MISSING` for an added name)
ORIGINAL: dict[str, object] = {}
_PENDING: dict[str, list[tuple[str, Change]]] = {}   # module -> targets waiting for its import
_APPLIED = False


def changes() -> list[Change]:
    return _changes()


def split_target(target: str) -> tuple[str, list[str], str | None]:
    """``"m:A.b"`` -> ``("m", ["A", "b"], None)``; ``"m:d[k]"`` -> ``("m", ["d"], "k")``."""
    module, _, rest = target.partition(":")
    key = None
    if rest.endswith("]"):
        rest, _, key = rest[:-1].partition("[")
    return module, rest.split("."), key


def current(target: str, module=None):
    """The value at ``target`` now (:data:`MISSING` if absent)."""
    name, path, key = split_target(target)
    obj = module if module is not None else importlib.import_module(name)
    for part in path:
        obj = getattr(obj, part, MISSING)
        if obj is MISSING:
            return MISSING
    if key is not None:
        return obj.get(key, MISSING)
    return obj


def _resolve(spec: str):
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def _check_exists(original, target: str, change: Change) -> None:
    if original is MISSING and not change.adds:
        raise RuntimeError(f"recbole_ext change {change.name!r}: {target} does not exist in this RecBole; "
                           "the list in recbole_ext/patches.py is for RecBole 1.2.1.")


def _install(target: str, change: Change, module=None) -> None:
    if target in INSTALLED and current(target, module) is INSTALLED[target]:
        return                                            # already in place (idempotent)
    name, path, key = split_target(target)
    owner = module if module is not None else importlib.import_module(name)
    for part in path[:-1]:
        owner = getattr(owner, part)
    attr = path[-1]
    if key is not None:
        container = getattr(owner, attr)
        original = container.get(key, MISSING)
        _check_exists(original, target, change)
        value = _resolve(change.make)(original, f"{attr}[{key}]")
        container[key] = value
    else:
        original = owner.__dict__.get(attr, MISSING) if isinstance(owner, type) else getattr(owner, attr, MISSING)
        if original is MISSING and isinstance(owner, type):
            original = getattr(owner, attr, MISSING)     # inherited: the replacement wraps the base's
        _check_exists(original, target, change)
        ours = next((t for t in change.targets if t in INSTALLED and INSTALLED[t] is original), None)
        if ours is not None:                              # a module that imported our value by name
            ORIGINAL[target], INSTALLED[target] = ORIGINAL[ours], original
            return
        value = _resolve(change.make)(original, attr)
        if value is original:
            return                                        # nothing to change here (numpy already has the name)
        setattr(owner, attr, value)
    ORIGINAL[target], INSTALLED[target] = original, value


class _InstallOnImport:
    """Meta-path hook: install a module's targets right after the module first runs."""

    def find_spec(self, name, path=None, target=None):
        if name not in _PENDING:
            return None
        spec = None
        for finder in sys.meta_path:             # whoever would have found it (path, zip, editable installs)
            if finder is not self and hasattr(finder, "find_spec"):
                spec = finder.find_spec(name, path, target)
                if spec is not None:
                    break
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None
        exec_module = spec.loader.exec_module

        def exec_and_install(module):
            exec_module(module)
            for target, change in _PENDING.get(name, []):
                _install(target, change, module)

        spec.loader.exec_module = exec_and_install
        return spec


def install(name: str) -> None:
    """Install one change now (``compat.prepare``: numpy's names before RecBole is imported)."""
    change = next(c for c in changes() if c.name == name)
    for target in change.targets:
        _install(target, change)


def apply() -> None:
    """Install every change once (idempotent)."""
    global _APPLIED
    if _APPLIED:
        return
    if not any(isinstance(f, _InstallOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _InstallOnImport())     # first: a factory below may import such a module
    for change in changes():
        for target in change.targets:
            module = split_target(target)[0]
            if module.startswith(ON_IMPORT) and module not in sys.modules:
                _PENDING.setdefault(module, []).append((target, change))
            else:
                _install(target, change)
    _APPLIED = True


def markdown_table() -> str:
    """docs/compatibility.md's table: one row per change."""
    rows = ["| change | what it does | why | ref | test |", "|---|---|---|---|---|"]
    for c in changes():
        where = ", ".join(f"`{t}`" for t in c.targets[:2]) + (f" and {len(c.targets) - 2} more" if len(c.targets) > 2 else "")
        rows.append(f"| {c.name} ({where}) | {c.what} | {c.why} | {c.ref} | `{c.test}` |")
    return "\n".join(rows)


__all__ = ["INSTALLED", "MISSING", "ORIGINAL", "Change", "apply", "changes", "current", "markdown_table", "split_target"]
