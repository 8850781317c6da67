"""The project copy the end-to-end tests and `nextbuy bench dag` run in: the working tree as git
sees it, with the given params, and none of the checkout's own stores, outputs or caches."""

from __future__ import annotations

import subprocess

import yaml

from nextbuy.bench.project_copy import copy_project


def _tree(root) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and ".git" not in p.parts}


def _checkout(root, git: bool):
    files = {
        "src/pkg/code.py": "x = 1\n",
        "dvc.yaml": "stages: {}\n",
        "notes/new.md": "not committed yet\n",  # untracked, not ignored: goes along
        "monitoring/workspace/p/snapshots/s.json": "{}",  # ignored store
        "site/index.html": "<html>",  # ignored build
        ".mypy_cache/.gitignore": "*\n",  # a tool cache ignoring itself
        ".mypy_cache/3.11/x.json": "{}",
        "data/ingested/edges.parquet": "output",  # a top-level pipeline output
        "src/pkg/__pycache__/code.cpython-311.pyc": "bytecode",
        ".gitignore": "monitoring/workspace\n/site/\n__pycache__/\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    if git:
        subprocess.run(["git", "init", "-q"], cwd=root, check=True)
        subprocess.run(["git", "add", "src", "dvc.yaml", ".gitignore"], cwd=root, check=True)
    return root


def test_a_git_checkout_is_copied_as_git_sees_it(tmp_path):
    root = _checkout(tmp_path / "checkout", git=True)
    dest = copy_project(root, tmp_path / "copy", {"train": {"epochs": 1}})
    assert _tree(dest) == {"src/pkg/code.py", "dvc.yaml", "notes/new.md", ".gitignore", "params.yaml"}
    assert yaml.safe_load((dest / "params.yaml").read_text()) == {"train": {"epochs": 1}}
    committed = subprocess.run(["git", "ls-files"], cwd=dest, capture_output=True, text=True, check=True)
    assert set(committed.stdout.split()) == _tree(dest)
    status = subprocess.run(["git", "status", "--porcelain"], cwd=dest, capture_output=True, text=True)
    assert status.stdout == ""


def test_outside_git_the_tree_is_copied_without_outputs_and_bytecode(tmp_path):
    root = _checkout(tmp_path / "tree", git=False)
    dest = copy_project(root, tmp_path / "copy", {})
    copied = _tree(dest)
    assert {"src/pkg/code.py", "dvc.yaml", "notes/new.md", "params.yaml"} <= copied
    assert not any(name.startswith("data/") or "__pycache__" in name for name in copied)
