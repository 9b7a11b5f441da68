"""BUILD cannot rot: every listed file exists and every Python file is in some target."""

import ast
import glob
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KINDS = ("py_library", "py_binary", "py_test")


def _files(node):
    """Files named by a srcs/data expression: lists, glob([...]) and their sums."""
    if isinstance(node, ast.List):  # target labels (":name", "//pkg:name") are not files
        return [f for f in (ast.literal_eval(e) for e in node.elts) if not f.startswith((":", "//"))]
    if isinstance(node, ast.BinOp):
        return _files(node.left) + _files(node.right)
    if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "glob":
        matches = []
        for pattern in ast.literal_eval(node.args[0]):
            found = sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))
            assert found, f"BUILD glob {pattern!r} matches no file"
            matches += found
        return matches
    raise AssertionError(f"unsupported BUILD expression: {ast.dump(node)}")


def _targets():
    tree = ast.parse(open(os.path.join(ROOT, "BUILD")).read(), "BUILD")
    targets = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in KINDS:
            kwargs = {k.arg: k.value for k in node.keywords}
            files = []
            for key in ("srcs", "data"):
                if key in kwargs:
                    files += _files(kwargs[key])
            name = ast.literal_eval(kwargs["name"])
            targets.append((node.func.id, name, files, kwargs.get("main")))
    return targets


def test_listed_files_exist():
    missing = [f for _, _, files, _ in _targets() for f in files if not os.path.exists(os.path.join(ROOT, f))]
    assert not missing, f"BUILD lists files that do not exist: {missing}"


def test_every_python_file_is_in_a_target():
    listed = {f for _, _, files, _ in _targets() for f in files}
    python = {
        os.path.relpath(p, ROOT)
        for top in ("l2o_tf", "train", "export", "tests")
        for p in glob.glob(os.path.join(ROOT, top, "**", "*.py"), recursive=True)
    }
    assert not python - listed, f"Python files in no BUILD target: {sorted(python - listed)}"


def test_each_test_file_and_binary_has_its_own_target():
    kinds = {}
    for kind, _, files, _ in _targets():
        for f in files:
            kinds.setdefault(f, set()).add(kind)
    for test in glob.glob(os.path.join(ROOT, "tests", "test_*.py")):
        assert "py_test" in kinds.get(os.path.relpath(test, ROOT), set()), test
    for top in ("train", "export"):
        for path in glob.glob(os.path.join(ROOT, top, "*.py")):
            if 'if __name__ == "__main__"' in open(path).read():
                assert "py_binary" in kinds.get(os.path.relpath(path, ROOT), set()), f"{path} is a binary"


def test_target_names_are_unique():
    names = [name for _, name, _, _ in _targets()]
    assert len(names) == len(set(names))
