"""The README is a short front door and every link of it and of docs/ leads somewhere."""
import glob
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = [os.path.join(ROOT, "README.md"), *glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True)]


def test_the_readme_is_a_front_door():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert len(lines) <= 250
    assert any("make run" in line for line in lines) and any("make test" in line for line in lines)


def test_every_relative_link_resolves():
    assert len(PAGES) > 15
    broken = []
    for page in PAGES:
        with open(page, encoding="utf-8") as f:
            targets = re.findall(r"\]\(([^)\s]+)\)", f.read())
        for target in targets:
            if target.startswith(("http://", "https://", "#", "mailto:")):
                continue
            if not os.path.exists(os.path.normpath(os.path.join(os.path.dirname(page), target.split("#")[0]))):
                broken.append(f"{os.path.relpath(page, ROOT)}: {target}")
    assert not broken, broken
