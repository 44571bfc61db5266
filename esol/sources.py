"""Which library source files a piece of code runs, and one digest of them.

Snakemake reruns a ``script:`` rule when its entry script changes, but the entry scripts
are a few lines over this library: an edit to ``esol/cam.py`` would otherwise never
rerun ``make_cam``. The workflow passes :func:`source_digest` of each entry script as a
rule param, so a change to any ``esol`` module the script imports (directly or through
other ``esol`` modules) changes the param and Snakemake reruns the rule and what
follows. Imports are read from the source (``ast``), nothing is executed.
"""

from __future__ import annotations

import ast
import hashlib
import os
from functools import lru_cache
from pathlib import Path


def _module_file(root: Path, dotted: str) -> Path | None:
    base = root.joinpath(*dotted.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _imported(tree: ast.AST, package: str, current: str) -> set[str]:
    """Dotted names of ``package`` modules that ``tree`` imports (absolute or relative)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = current.split(".")[: len(current.split(".")) - node.level]
                mod = ".".join(parts + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names.add(mod)
            # ``from esol.data import voc``: voc may be a module of its own.
            names.update(f"{mod}.{a.name}" for a in node.names)
    return {n for n in names if n == package or n.startswith(package + ".")}


def library_sources(entry: str | os.PathLike, root: str | os.PathLike,
                    package: str = "esol") -> list[Path]:
    """Files of ``package`` (under ``root``) that ``entry`` imports, transitively, sorted.

    Importing ``a.b.c`` also runs ``a/__init__.py`` and ``a/b/__init__.py``; they count.
    """
    root = Path(root)
    seen: dict[str, Path] = {}
    todo = [(Path(entry), "")]
    while todo:
        path, dotted = todo.pop()
        tree = ast.parse(path.read_text(), filename=str(path))
        current = dotted if path.name != "__init__.py" else dotted + ".__init__"
        for name in _imported(tree, package, current):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                mod = ".".join(parts[:i])
                if mod in seen:
                    continue
                f = _module_file(root, mod)
                if f is not None:
                    seen[mod] = f
                    todo.append((f, mod))
    return sorted(seen.values())


@lru_cache(maxsize=None)
def _digest(entry: str, root: str, package: str) -> str:
    h = hashlib.sha256()
    base = Path(root)
    for f in library_sources(entry, root, package):
        h.update(str(f.relative_to(base)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def source_digest(entry: str | os.PathLike, root: str | os.PathLike, package: str = "esol") -> str:
    """A short sha256 of every ``package`` file ``entry`` imports (names and contents)."""
    return _digest(str(entry), str(root), package)
