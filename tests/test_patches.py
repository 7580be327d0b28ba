"""The one list of what recbole_ext changes in RecBole (recbole_ext.patches) against what is really
changed: every declared target holds our value, and nothing of ours sits anywhere else in RecBole."""
import os
import re
import sys
import types

import pytest

import recbole_ext  # noqa: F401
import recbole.quick_start  # noqa: F401  (its targets are installed when it is imported)
from recbole_ext import patches

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OURS = ("recbole_ext", "lightning_genrec")


def _ours(value) -> bool:
    module = getattr(value, "__module__", None) or getattr(type(value), "__module__", "") or ""
    return isinstance(module, str) and module.split(".")[0] in OURS


def found_in_recbole() -> set[str]:
    """Every place in RecBole's loaded modules that holds something of ours, as a target string."""
    found = set()
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] != "recbole" or not isinstance(module, types.ModuleType):
            continue
        if getattr(module, "__file__", None) is None and module.__spec__ is not None and module.__spec__.origin is None \
                and not hasattr(module, "__path__"):
            found.add(f"sys:modules[{name}]")                  # a module RecBole has no file for: ours
            continue
        for attr, value in list(vars(module).items()):
            if _ours(value):
                found.add(f"{name}:{attr}")
            if isinstance(value, type) and value.__module__ == name:     # a class RecBole defines here
                found.update(f"{name}:{attr}.{a}" for a, v in vars(value).items() if _ours(v))
    from recbole.evaluator import register

    found.update(f"recbole.evaluator.register:metrics_dict[{k}]" for k, v in register.metrics_dict.items() if _ours(v))
    return found


def declared() -> list[str]:
    return [t for c in patches.changes() for t in c.targets]


def test_each_target_is_declared_once():
    targets = declared()
    assert len(targets) == len(set(targets)), [t for t in set(targets) if targets.count(t) > 1]
    names = [c.name for c in patches.changes()]
    assert len(names) == len(set(names))


def test_every_declared_target_holds_what_was_installed():
    for target in declared():
        assert target in patches.INSTALLED, f"{target} was never installed"
        assert patches.current(target) is patches.INSTALLED[target], f"{target} was replaced after us"


def test_nothing_of_ours_sits_in_recbole_undeclared():
    recbole_targets = {t for t in declared() if t.startswith(("recbole", "sys:modules[recbole"))}
    assert found_in_recbole() - recbole_targets == set()
    # and the walk does see our changes (a walk that found nothing would pass the line above)
    assert {"recbole.data.dataset.dataset:Dataset.build", "recbole.utils:get_model",
            "sys:modules[recbole.model.general_recommender.mvae]"} <= found_in_recbole()


def test_a_replacement_keeps_recboles_own_function_reachable():
    # no change wraps another's: each replacement was made from RecBole's own value
    for target, original in patches.ORIGINAL.items():
        assert not _ours(original), f"{target} was made from one of our values"


def test_each_change_names_a_test_that_exists():
    for change in patches.changes():
        for ref in change.test.split(", "):
            path, _, function = ref.partition("::")
            path = path if path.startswith("tests/") else "tests/" + path
            assert os.path.isfile(os.path.join(ROOT, path)), (change.name, path)
            if function:
                with open(os.path.join(ROOT, path), encoding="utf-8") as f:
                    assert re.search(rf"^def {re.escape(function)}\(", f.read(), re.M), (change.name, ref)


def test_apply_again_changes_nothing():
    before = {t: patches.current(t) for t in declared()}
    patches.apply()
    for change in patches.changes():
        patches.install(change.name)
    assert {t: patches.current(t) for t in declared()} == before


def test_a_misspelt_target_fails_loudly():
    bad = patches.Change("typo", ("recbole.data.dataset.dataset:Dataset._rm_duplication",),
                         "recbole_ext.atomic:warn_duplicates", "", "", "", "")
    with pytest.raises(RuntimeError, match="does not exist in this RecBole"):
        patches._install(bad.targets[0], bad)


def test_the_compatibility_page_is_generated_from_the_list():
    with open(os.path.join(ROOT, "docs", "compatibility.md"), encoding="utf-8") as f:
        page = f.read()
    assert patches.markdown_table() in page
