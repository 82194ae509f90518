"""No module of the package touches another's private names (a check like the import contract of test_layers.py).

A name with one leading underscore is private to the module that defines it: no other module reads it as an
attribute (`model._pending`, `kernels_small._probe`). A package may share private helpers among its own modules by
importing them (store/files.py's with store/writer.py), never with another package. The check reads the source
(ast), so it sees every access, in functions too; the negative controls below show it flags each kind of reach-in.
"""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Reach-ins the check knows and allows, each with its reason: (module path, name)
ALLOWED = {
    # os._exit is the documented way to end a process without cleanup, not a private member
    ("minigrad/study/executors.py", "_exit"),
    # left to their owners (the study's executors and the store), in code this check was written alongside:
    # concurrent.futures keeps no public list of a pool's worker processes
    ("minigrad/study/executors.py", "_processes"),
    # reader.py reads the header a Store (writer.py) stages before its first commit
    ("minigrad/store/reader.py", "_header"),
}


# collections.namedtuple's documented methods and attributes: public, underscored only to keep clear of field names
NAMEDTUPLE_API = {"_fields", "_field_defaults", "_make", "_replace", "_asdict"}


def private(name):
    return name.startswith("_") and not name.startswith("__") and name not in NAMEDTUPLE_API


def defined_names(tree):
    """Every name the module itself defines: functions, classes, arguments, assigned names and attributes."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
    return names


def reach_ins(root, package="minigrad"):
    """['path:line: what'] for every private name a module of `package` (under `root`) takes from another."""
    found = []
    for path in sorted((root / package).rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        tree = ast.parse(path.read_text(), filename=rel)
        own = defined_names(tree)
        home = ".".join(path.relative_to(root).parts[:-1])  # the module's package, e.g. minigrad.engine
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and private(node.attr) and node.attr not in own:
                what = node.attr
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                source = node.module if (root / (node.module.replace(".", "/") + "/__init__.py")).exists() \
                    else node.module.rpartition(".")[0]  # the package the names come from
                names = [a.name for a in node.names if private(a.name)]
                if not names or source == home:
                    continue
                what = ", ".join(names)
            else:
                continue
            if (rel, what) not in ALLOWED:
                found.append(f"{rel}:{node.lineno}: {what}")
    return found


def test_no_module_touches_another_modules_private_names():
    assert reach_ins(ROOT) == []


def test_every_allowed_reach_in_still_exists():
    # an exception whose code is gone would quietly allow the next reach-in of that name
    for rel, name in ALLOWED:
        assert f".{name}" in (ROOT / rel).read_text(), (rel, name)


def write_package(tmp_path, files):
    for rel, text in files.items():
        path = tmp_path / "pkg" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        for parent in path.relative_to(tmp_path).parents:
            if parent != Path("."):
                (tmp_path / parent / "__init__.py").touch()
    return tmp_path


MODEL = "class MLP:\n    def __init__(self):\n        self._pending = None\n\n\ndef _helper():\n    return 1\n"


def test_a_module_reading_another_modules_private_member_is_flagged(tmp_path):
    # negative control: a training-loop module reading the model's private member, inside a function
    root = write_package(tmp_path, {"engine/model.py": MODEL,
                                    "engine/loop.py": "def run(model):\n    return model._pending\n"})
    assert reach_ins(root, "pkg") == ["pkg/engine/loop.py:2: _pending"]


def test_a_private_import_from_another_package_is_flagged(tmp_path):
    root = write_package(tmp_path, {"engine/model.py": MODEL,
                                    "profile/breakdown.py": "from pkg.engine.model import MLP, _helper\n"})
    assert reach_ins(root, "pkg") == ["pkg/profile/breakdown.py:1: _helper"]


def test_own_members_and_a_packages_shared_helpers_pass(tmp_path):
    root = write_package(tmp_path, {"engine/model.py": MODEL + "\n\ndef twin(m):\n    return m._pending\n",
                                    "engine/steps.py": "from pkg.engine.model import _helper\n"})
    assert reach_ins(root, "pkg") == []
