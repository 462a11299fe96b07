"""House rules that keep the structure carrying new techniques: checked on the source, so they cannot rot."""
import ast
import re
import subprocess
import sys
from pathlib import Path

import compress as C
from compress.__main__ import technique_table
from conftest import ROOT

LIB = sorted((ROOT / "compress").rglob("*.py"))


def _name(path: Path) -> str:
    """compress/table/steps.py -> table.steps; compress/__init__.py -> __init__."""
    parts = path.relative_to(ROOT / "compress").with_suffix("").parts
    return ".".join(parts[:-1]) if parts[-1] == "__init__" and len(parts) > 1 else ".".join(parts)


MODULES = {_name(p) for p in LIB}


def _imports(path: Path) -> set[str]:
    """Modules of compress/ this file imports (dotted below compress), at the top or inside functions."""
    here = _name(path).split(".")
    pkg = here[:-1] if path.name != "__init__.py" else here
    pkg = [] if pkg == ["__init__"] else pkg
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = pkg[:len(pkg) - node.level + 1] if node.level > 1 else pkg
        elif (node.module or "").split(".")[0] == "compress":
            base = []
            node = ast.ImportFrom(module=node.module.partition(".")[2] or None, names=node.names, level=1)
        else:
            continue
        mod = ".".join([*base, *(node.module.split(".") if node.module else [])])
        for a in node.names:
            full = f"{mod}.{a.name}" if mod else a.name
            out.add(full if full in MODULES else (mod or "__init__"))
    return {m for m in out if m in MODULES} - {_name(path)}


def test_no_import_cycle_inside_compress():
    graph = {_name(p): _imports(p) for p in LIB if p.name != "__init__.py" or p.parent.name == "compress"}
    graph.pop("__init__")  # the package's front door imports everything; nothing imports it back (checked below)
    assert all("__init__" not in deps for deps in graph.values())
    done, path = set(), []

    def visit(m):
        if m not in graph:  # a wing's __init__ (a docstring only)
            return
        assert m not in path, f"import cycle: {' -> '.join(path[path.index(m):] + [m])}"
        if m in done:
            return
        path.append(m)
        for d in graph[m]:
            visit(d)
        path.pop()
        done.add(m)
    for m in graph:
        visit(m)


# The wings from the bottom up: a module imports its own wing or one below it, never one above (a measurement
# does not replay recipes, a technique does not run the pipeline); outputs and learn sit side by side.
RANK = {"errors": 0, "serve": 1, "models": 2, "measure": 3, "techniques": 4, "table": 5, "sweep": 6, "outputs": 7,
        "learn": 7, "bench": 8}


def test_every_import_points_down_the_wings():
    up = [f"{_name(p)} -> {d}" for p in LIB if p.parent.name in RANK for d in _imports(p)
          if RANK[d.split(".")[0]] > RANK[p.parent.name]]
    assert not up
    assert set(RANK) == {p.parent.name for p in LIB} - {"compress"} | {"errors"}


def test_the_queue_and_the_store_know_nothing_of_each_other():
    """The app wires them (ui/jobs.py): the queue logs plain rows to any callable, the store records plain rows."""
    serve = ROOT / "compress" / "serve"
    assert "serve.store" not in _imports(serve / "jobs.py") and "serve.jobs" not in _imports(serve / "store.py")


def test_the_learn_article_uses_the_stores_public_api_only():
    src = (ROOT / "compress" / "learn" / "article.py").read_text()
    used = {n.attr for n in ast.walk(ast.parse(src))
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "store"}
    assert used == {"applies", "record_apply"}, used
    assert not re.search(r"sqlalchemy|sqlite|\bSELECT\b|\bINSERT\b|\._applies|_table\(", src)


def test_measuring_a_model_knows_no_technique():
    """A technique declares its own stored params (stored_params): the measurements never special-case one."""
    assert not [m for m in _imports(ROOT / "compress" / "measure" / "core.py") if m.startswith("techniques")]


def test_the_step_type_knows_no_technique():
    """table/step.py is the Step type and Ctx only; each step's apply function lives with its technique."""
    assert _imports(ROOT / "compress" / "table" / "step.py") == set()


def test_the_library_is_in_wings():
    """compress/ holds the front door, the CLI and the error type; every other module lives in a wing."""
    top = {p.name for p in (ROOT / "compress").glob("*.py")}
    assert top == {"__init__.py", "__main__.py", "errors.py"}
    assert {p.parent.name for p in LIB} - {"compress"} == {
        "table", "techniques", "models", "measure", "sweep", "outputs", "serve", "learn", "bench"}


def test_family_knowledge_stays_in_the_adapter():
    files = [p for p in LIB if p.name not in ("adapter.py", "adapters.py", "encoders.py")] + sorted((ROOT / "ui").rglob("*.py"))
    hits = [f"{p.name}:{i}" for p in files for i, line in enumerate(p.read_text().splitlines(), 1)
            if re.search(r"family ?==|hasattr\(", line)]
    assert not hits


def test_readme_technique_table_is_the_step_table():
    readme = (ROOT / "README.md").read_text()
    assert technique_table() in readme, "README's technique table differs: paste `python -m compress table`"


def test_no_module_over_300_lines():
    long = [f"{p.relative_to(ROOT)}: {n}" for p in [*LIB, *(ROOT / "ui").rglob("*.py"), ROOT / "app.py"]
            if (n := len(p.read_text().splitlines())) > 300]
    assert not long


def test_every_library_cache_is_named_and_bounded():
    caches = C.cache_policy()
    assert {"spectra", "uploads", "bundled models"} <= {c["cache"] for c in caches}
    assert all(0 < c["max entries"] <= 8 for c in caches)
    readme = (ROOT / "README.md").read_text()
    assert all(c["cache"] in readme for c in caches)


def test_no_pages_folder_beside_app_py():
    """A pages/ folder beside app.py makes Streamlit list its modules as pages and route a fresh server's first
    session around app.py (a shared /compress link lost its recipe): the app lives in ui/, its pages in ui/pages/."""
    assert not (ROOT / "pages").exists()
    assert "uses_pages_directory" not in (ROOT / "ui" / "shell.py").read_text()  # no private flag needed


def test_library_never_imports_streamlit():
    code = "import sys, compress; sys.exit('streamlit' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_every_control_links_to_a_learn_section():
    """A step with a control on the Compress page links to the Learn tab that shows it working (a new technique
    is taught there too: learn_common.STEP_SECTION)."""
    from ui.learn_common import SECTIONS, STEP_SECTION
    assert [s.name for s in C.STEPS if any(f.label for f in s.fields) and s.name not in STEP_SECTION] == []
    assert set(STEP_SECTION.values()) <= set(SECTIONS) and set(STEP_SECTION) <= {s.name for s in C.STEPS}


def test_the_longest_first_order_names_test_files_that_exist():
    """make test hands out the files longest first (conftest.LONGEST): a renamed file would silently go last."""
    from conftest import LONGEST, SLOW_FILES
    names = {p.stem for p in (ROOT / "tests").glob("test_*.py")}
    assert set(LONGEST) <= names and SLOW_FILES <= names and len(set(LONGEST)) == len(LONGEST)
