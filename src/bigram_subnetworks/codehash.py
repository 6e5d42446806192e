"""The library code a workflow script runs, as one hash: rules pass it as a parameter, so an edit
to a library function reruns exactly the jobs whose scripts import it (Snakemake reruns a job
whose parameters changed; it does not look inside installed packages by itself).

The modules are found by reading the script's and the library's imports (`ast`), never by
importing them: the Snakefile computes these hashes on every invocation, cheaply. What is hashed
is each module's syntax tree without docstrings and comments, so a documentation or formatting
edit reruns nothing; a change to what the code does reruns exactly the jobs that run it.
"""

from __future__ import annotations

import ast
import hashlib
from functools import cache
from pathlib import Path

PACKAGE = "bigram_subnetworks"
SOURCE = Path(__file__).resolve().parent


def _imported(tree: ast.AST, module: str | None) -> set[str]:
    """The package's modules an AST imports (``module``: the importing module's own name, for
    relative imports; None for a script outside the package)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith(f"{PACKAGE}.")}
        elif isinstance(node, ast.ImportFrom):
            absolute = node.module or ""
            if node.level:  # from . import x / from .x import y, inside the package
                absolute = f"{PACKAGE}.{node.module}" if node.module else PACKAGE
            if absolute == PACKAGE:
                found |= {a.name for a in node.names if (SOURCE / f"{a.name}.py").is_file()}
            elif absolute.startswith(f"{PACKAGE}."):
                found.add(absolute.split(".")[1])
    return found - {module}


@cache
def _dependencies(module: str) -> frozenset[str]:
    """``module`` and every package module it imports, transitively."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        tree = ast.parse((SOURCE / f"{name}.py").read_text(encoding="utf-8"))
        todo += sorted(_imported(tree, name))
    return frozenset(seen)


def library_modules(script: str | Path) -> list[str]:
    """The package modules a script runs: those it imports and theirs, sorted; the package's
    ``__init__`` always (it holds the version)."""
    tree = ast.parse(Path(script).read_text(encoding="utf-8"))
    modules = {"__init__"}
    for name in _imported(tree, None):
        modules |= _dependencies(name)
    return sorted(modules)


def behaviour(source: str) -> str:
    """What of a module's source decides what it does: its syntax tree without docstrings,
    comments, formatting or line numbers (`ast.dump` of the parsed tree). An edit to a
    docstring, a comment or the layout leaves it unchanged, so it reruns nothing."""
    tree = ast.parse(source)
    documented = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    for node in ast.walk(tree):
        first = node.body[0] if isinstance(node, documented) and node.body else None
        value = first.value if isinstance(first, ast.Expr) else None
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            node.body = node.body[1:] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=False, include_attributes=False)


@cache
def _module_behaviour(path: Path, mtime_ns: int, size: int) -> bytes:
    """`behaviour` of one module file, computed once per process and version of the file: the
    Snakefile hashes every rule's script, and the scripts share most modules: parsing each
    module once took hashing all scripts from 1.26 to 0.54 s, off every Snakemake invocation
    (and every SLURM job, which parses the Snakefile again)."""
    return behaviour(path.read_text(encoding="utf-8")).encode()


def code_hash(script: str | Path) -> str:
    """sha256 (16 hex digits) of the behaviour (`behaviour`) of `library_modules(script)`."""
    digest = hashlib.sha256()
    for name in library_modules(script):
        path = SOURCE / f"{name}.py"
        stat = path.stat()
        text = _module_behaviour(path, stat.st_mtime_ns, stat.st_size)
        digest.update(name.encode() + b"\0" + text + b"\0")
    return digest.hexdigest()[:16]
