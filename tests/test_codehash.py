"""What reruns a job: the behaviour of the library code its script imports, not its text."""

from pathlib import Path

from bigram_subnetworks.codehash import SOURCE, behaviour, code_hash, library_modules

ROOT = Path(__file__).resolve().parents[1]
CODE = '''"""A module."""

import math


class Thing:
    """A thing."""

    def area(self, radius):
        """Its area."""
        return math.pi * radius**2  # πr²
'''


def test_docstrings_comments_and_layout_do_not_change_the_behaviour():
    edited = (
        CODE.replace('"""A thing."""', '"""A round thing, documented at length."""')
        .replace("# πr²", "# the area of a disc")
        .replace('"""A module."""\n', "")
        .replace("math.pi * radius**2", "math.pi * (radius ** 2)")
    )
    assert behaviour(edited) == behaviour(CODE)


def test_a_change_to_what_the_code_does_changes_the_behaviour():
    for before, after in [("radius**2", "radius**3"), ("math.pi", "math.tau"), ("area", "size")]:
        assert behaviour(CODE.replace(before, after)) != behaviour(CODE), after
    # A function whose body is only a docstring still has one (`pass`), and a string that is
    # not the first statement is code.
    assert behaviour('def f():\n    """Doc."""\n') == behaviour("def f():\n    pass\n")
    assert behaviour('x = 1\n"text"\n') != behaviour("x = 1\n")


def test_a_script_hashes_the_modules_it_imports_and_theirs():
    modules = library_modules(ROOT / "workflow/scripts/overlap.py")
    assert {"__init__", "overlap", "masking", "io"} <= set(modules)
    assert "lens" not in modules and "training" not in modules
    assert code_hash(ROOT / "workflow/scripts/overlap.py") != code_hash(
        ROOT / "workflow/scripts/lens.py"
    )
    assert all((SOURCE / f"{name}.py").is_file() for name in modules)
