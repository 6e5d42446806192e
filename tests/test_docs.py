"""The docs say what is true: every cited section of docs/method.md exists and, where a line names
its topic, is the section about it; links into method.md resolve; the library's tiers in
docs/architecture.md are the imports the code has; validating a config imports no torch."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import yaml

from bigram_subnetworks.codehash import library_modules

ROOT = Path(__file__).resolve().parents[1]
METHOD = ROOT / "docs/method.md"
ARCHITECTURE = ROOT / "docs/architecture.md"
PACKAGE = ROOT / "src/bigram_subnetworks"
# Where code, configs and docs cite method.md.
TREES = ("src", "workflow", "docs", "benchmarks", "tests", "configs")
FILES = ("README.md", "config.yaml", "Snakefile")
SUFFIXES = {".py", ".md", ".yaml", ".yml", ".smk", ".rst"}

# "docs/method.md §4", "method.md §3–4", "(docs/method.md\n§8)", "[method.md](method.md) §1–§10",
# "§1, §10"; and a bare "(§5)" in a file of this project, which means method.md too. A "Paper §5"
# is the paper's own section, not ours.
CITATION = re.compile(r"(?<!Paper )§(\d+)((?:\s*(?:–|-|,|, and)\s*§?\d+)*)")
# A markdown link into method.md, with its text: [method §4](docs/method.md#4-training).
LINK = re.compile(r"\[([^\]]*)\]\(([^)\s]*method\.md)#([^)\s]+)\)")

# Words that name one topic of method.md (a hyphen reads as a space): a citation on a line that
# says one of them must cite (one of) its section(s). Only words that no other section is about,
# so a miss is a misfiling.
TOPICS = {
    "early stop": {4},
    "loss spike": {4},
    "stability check": {4},
    "continuous sparsification": {3, 4},
    "null": {8, 12},
    "overlap": {8, 12},
    "hook": {10},
    "residual stream analys": {10},
    "ridge": {10},
    "rotation": {10},
    "clip inf": {6},
    "drop inf": {6},
    "pruning baseline": {5},
    "dose response": {9},
    "size matched": {7},
    "released mask": {12},
}


def method_sections() -> dict[int, str]:
    return {
        int(number): title
        for number, title in re.findall(r"^## §(\d+) (.+)$", METHOD.read_text(), re.M)
    }


def github_anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lowercase, punctuation (§ included) dropped but - and _,
    spaces to -."""
    kept = "".join(c for c in heading.lower() if c.isalnum() or c in " -_")
    return kept.replace(" ", "-")


def cited_files() -> list[Path]:
    paths = [ROOT / name for name in FILES if (ROOT / name).exists()]
    for tree in TREES:
        paths += [p for p in sorted((ROOT / tree).rglob("*")) if p.suffix in SUFFIXES]
    return [p for p in paths if p.is_file() and "egg-info" not in str(p)]


def citations() -> list[tuple[str, int, set[int], str]]:
    """(file, line, cited sections, the lines the citation spans) of every § citation; the
    sections are those of every citation on these lines (a table row cites several)."""
    found = []
    for path in cited_files():
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        for match in CITATION.finditer(text):
            numbers = [int(match[1]), *map(int, re.findall(r"\d+", match[2]))]
            first = text.count("\n", 0, match.start())
            last = text.count("\n", 0, match.end())
            # A range names every section between its ends.
            sections = set(numbers)
            if re.search(r"[–-]", match[2]) and len(numbers) == 2:
                sections = set(range(numbers[0], numbers[1] + 1))
            found.append((str(path.relative_to(ROOT)), first, last, sections, lines))
    return [
        (file, first + 1, set().union(*on_lines), "\n".join(lines[first : last + 1]))
        for file, first, last, _, lines in found
        for on_lines in [[s for f, a, b, s, _ in found if f == file and a <= last and b >= first]]
    ]


def test_the_scan_finds_the_citations():
    cited = citations()
    assert len(cited) > 100
    files = {file for file, *_ in cited}
    assert {"src/bigram_subnetworks/training.py", "config.yaml", "README.md"} <= files


def test_every_cited_section_of_method_md_exists():
    sections = method_sections()
    assert sorted(sections) == list(range(1, len(sections) + 1))
    missing = [
        f"{file}:{line}: §{sorted(cited)}"
        for file, line, cited, _ in citations()
        if not cited <= set(sections)
    ]
    assert not missing


def test_a_citation_that_names_its_topic_cites_the_section_about_it():
    sections = method_sections()
    misfiled = []
    for file, line, cited, context in citations():
        lowered = context.lower().replace("-", " ")
        for word, about in TOPICS.items():
            if word in lowered and not cited & about:
                names = ", ".join(f"§{n} {sections[n]}" for n in sorted(about))
                misfiled.append(f"{file}:{line}: says {word!r} (that is {names}), cites {cited}")
    assert not misfiled


def test_each_topic_word_is_said_in_a_section_it_points_to():
    # So that TOPICS follows method.md: a word moved to another section fails here.
    parts = re.split(r"^## §(\d+)", METHOD.read_text(), flags=re.M)[1:]
    said = {
        int(n): " ".join(body.lower().replace("-", " ").split())
        for n, body in zip(parts[::2], parts[1::2], strict=True)
    }
    for word, about in TOPICS.items():
        assert any(word in said[n] for n in about), word


def test_links_into_method_md_name_a_heading_and_their_section():
    headings = re.findall(r"^#{2,6} (.+)$", METHOD.read_text(), re.M)
    anchors = {github_anchor(heading) for heading in headings}
    assert "1-data" in anchors and "13-deliberate-deviations" in anchors
    broken, seen = [], 0
    for path in cited_files():
        if path.suffix != ".md":
            continue
        for text, target, anchor in LINK.findall(path.read_text(encoding="utf-8")):
            seen += 1
            where = f"{path.relative_to(ROOT)}: [{text}]({target}#{anchor})"
            if anchor not in anchors:
                broken.append(f"{where}: no such heading")
            number = re.search(r"§(\d+)", text)
            if number and not anchor.startswith(f"{number[1]}-"):
                broken.append(f"{where}: the text names another section than the anchor")
    assert seen and not broken


# --- the library's tiers (docs/architecture.md) ---------------------------------------------

# Functions that import a lower tier where they run, as docs/architecture.md names them.
LAZY_LOWER = {("config", "released"), ("grid", "hub")}


def tiers() -> list[tuple[str, list[str]]]:
    section = ARCHITECTURE.read_text().split("## The library's tiers")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")][1:]
    return [(row.split("|")[1].strip(), re.findall(r"`(\w+)`", row.split("|")[2])) for row in rows]


def _package_import(node: ast.stmt) -> list[str]:
    """The package modules an import statement names; the package itself is ``__init__``."""
    if isinstance(node, ast.Import):
        parts = [alias.name.split(".") for alias in node.names]
        return [p[1] if len(p) > 1 else "__init__" for p in parts if p[0] == "bigram_subnetworks"]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level == 0 and not (node.module or "").startswith("bigram_subnetworks"):
        return []
    if node.level > 1:
        return []
    module = (node.module or "").removeprefix("bigram_subnetworks").lstrip(".")
    if module:
        return [module.split(".")[0]]
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    return [alias.name if alias.name in modules else "__init__" for alias in node.names]


def imports(module: str) -> tuple[set[str], set[str]]:
    """(package modules imported at the module's top, those imported inside functions), without
    imports for type checkers only (``if TYPE_CHECKING:``)."""
    top, inner = set(), set()

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for orelse in child.orelse:
                    visit(orelse, in_function)
                continue
            (inner if in_function else top).update(_package_import(child))
            functions = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
            visit(child, in_function or isinstance(child, functions))

    visit(ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8")), False)
    return top - {module}, inner - {module}


def test_every_module_is_in_exactly_one_tier():
    listed = [module for _, modules in tiers() for module in modules]
    assert len(tiers()) >= 5
    assert sorted(listed) == sorted(p.stem for p in PACKAGE.glob("*.py"))


def test_modules_import_only_their_own_and_earlier_tiers():
    rank = {module: i for i, (_, modules) in enumerate(tiers()) for module in modules}
    # Python runs the package's __init__ before any of its modules, whatever they import; it
    # loads nothing at its top (its names load their modules on first use).
    assert imports("__init__")[0] == set()
    lower, lazy = [], set()
    for module in rank:
        top, inner = imports(module)
        lower += [f"{module} → {t}" for t in top - {"__init__"} if rank[t] > rank[module]]
        lazy |= {(module, t) for t in inner - {"__init__"} if rank[t] > rank[module]}
    assert not lower
    assert lazy == LAZY_LOWER
    text = ARCHITECTURE.read_text()
    assert "`config.released_source` (`released`" in text
    assert "`grid.Grid.check_hub_families` (`hub`)" in text


def _imports_torch(modules: list[str]) -> bool:
    code = "import importlib, sys\n"
    code += "".join(f"importlib.import_module('bigram_subnetworks.{m}')\n" for m in modules)
    code += "print('torch' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return run.stdout.strip() == "True"


def test_the_tiers_marked_no_torch_import_none():
    light = [m for tier, modules in tiers() if "(no torch)" in tier for m in modules]
    assert {"atomic", "config", "grid"} <= set(light)
    assert not _imports_torch(light)


def test_the_rules_that_touch_no_model_import_what_the_doc_says():
    text = " ".join(ARCHITECTURE.read_text().split())
    claim = re.search(r"Rules that never touch a model \((.*?)\) import only (.*?): none", text)
    assert claim, "the sentence on rules that touch no model is gone from architecture.md"
    rules = re.findall(r"`(\w+\*?)`", claim[1])
    allowed = set(re.findall(r"`(\w+)`", claim[2]))
    scripts = [p for rule in rules for p in sorted((ROOT / "workflow/scripts").glob(f"{rule}.py"))]
    assert len(scripts) >= len(rules) + 5  # collect_* is several
    wider = {p.name: set(library_modules(p)) - allowed for p in scripts}
    assert not {name: extra for name, extra in wider.items() if extra}
    assert not _imports_torch(sorted(allowed))


# --- validating a config imports no torch -----------------------------------------------------

VALIDATE_PAPER_CONFIG = """
import sys
from pathlib import Path
from bigram_subnetworks.config import load_config
from bigram_subnetworks.grid import Grid
root = Path(sys.argv[1])
config = load_config(root / "configs/paper.yaml", root / "workflow/schemas/config.schema.yaml",
                     base=root / "config.yaml")
grid = Grid(config)
assert grid.released_runs(), "the paper's config compares released masks"
for model, lam in grid.released_runs():
    grid.released_source(model, lam)
for jobs in ("mask_jobs", "overlap_jobs", "ablation_jobs", "lens_jobs"):
    assert getattr(grid, jobs)()
print(sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")))
"""


def test_validating_the_paper_config_imports_no_torch():
    assert yaml.safe_load((ROOT / "configs/paper.yaml").read_text())["released_masks"]
    run = subprocess.run(
        [sys.executable, "-c", VALIDATE_PAPER_CONFIG, str(ROOT)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_the_tests_paragraph_says_what_make_test_fast_runs():
    recipe = re.search(r"^test-fast:.*\n\t(.*)$", (ROOT / "Makefile").read_text(), re.M)[1]
    marker = re.search(r'-m "([^"]+)"', recipe)[1]
    assert f'`pytest -m "{marker}"`' in ARCHITECTURE.read_text()
