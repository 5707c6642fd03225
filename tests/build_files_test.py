"""The BUILD files against the code: one target per file, deps as imported.

Debian's offline Bazel cannot run `py_test`, and nothing else would notice a
module without a target or a dependency missing from one; this test reads
every BUILD file (Starlark calls parse as Python) and each target's sources.
"""

import ast
import pathlib

import tensorflow as tf

_ROOT = pathlib.Path(__file__).resolve().parent.parent
_PACKAGES = ("sobolev_tf", "launch", "benchmarks", "tests")
_RULES = ("py_library", "py_test", "py_binary")


def _rules(package: pathlib.Path):
  """`{name: (kind, srcs, deps)}` of the package's BUILD file."""
  tree = ast.parse((package / "BUILD").read_text())
  rules = {}
  for node in tree.body:
    call = node.value if isinstance(node, ast.Expr) else None
    if not isinstance(call, ast.Call) or call.func.id not in _RULES:
      continue
    kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    rules[kwargs["name"]] = (
      call.func.id,
      tuple(kwargs.get("srcs", ())),
      set(kwargs.get("deps", ())),
    )
  return rules


def _packages():
  for top in _PACKAGES:
    for build in sorted((_ROOT / top).rglob("BUILD")):
      yield build.parent


def _label(module: str) -> str:
  """`sobolev_tf.tasks.base` -> `//sobolev_tf/tasks:base`."""
  path = _ROOT.joinpath(*module.split("."))
  if path.is_dir():  # A package: its __init__'s library, named after it.
    return "//" + "/".join(module.split("."))
  package, name = module.rsplit(".", 1)
  return "//" + package.replace(".", "/") + ":" + name


def _imported_labels(source: pathlib.Path):
  """Labels of the project's modules `source` imports."""
  labels = set()
  for node in ast.walk(ast.parse(source.read_text())):
    if isinstance(node, ast.ImportFrom) and node.module:
      top = node.module.split(".")[0]
      if top in _PACKAGES and top != "tests":
        for alias in node.names:
          module = f"{node.module}.{alias.name}"
          path = _ROOT.joinpath(*module.split("."))
          exists = path.is_dir() or path.with_suffix(".py").exists()
          labels.add(_label(module if exists else node.module))
    elif isinstance(node, ast.Import):
      for alias in node.names:
        if alias.name.split(".")[0] in ("sobolev_tf", "launch"):
          labels.add(_label(alias.name))
  return labels


def _absolute(dep: str, package: pathlib.Path) -> str:
  relative = package.relative_to(_ROOT).as_posix()
  if dep.startswith(":"):
    return f"//{relative}{dep}"
  if ":" not in dep:  # //sobolev_tf/testing is //sobolev_tf/testing:testing
    return dep
  path, name = dep.split(":")
  return path if path.rsplit("/", 1)[-1] == name else dep


class BuildFilesTest(tf.test.TestCase):
  def test_every_python_file_has_a_target(self):
    missing = []
    for package in _packages():
      sources = {s for _, srcs, _ in _rules(package).values() for s in srcs}
      for path in sorted(package.glob("*.py")):
        if path.name != "conftest.py" and path.name not in sources:
          missing.append(str(path.relative_to(_ROOT)))
    self.assertEqual(missing, [])

  def test_deps_are_the_imports(self):
    problems = []
    targets = set()
    for package in _packages():
      relative = package.relative_to(_ROOT).as_posix()
      for name in _rules(package):
        targets.add(f"//{relative}:{name}")
        if name == package.name:
          targets.add(f"//{relative}")
    for package in _packages():
      rules = _rules(package)
      for name, (_, srcs, deps) in rules.items():
        declared = {_absolute(d, package) for d in deps}
        # A binary of a library's file gets its imports through the library.
        covered = {
          src
          for dep in deps
          if dep.startswith(":") and dep[1:] in rules
          for src in rules[dep[1:]][1]
        }
        imported = set()
        for src in set(srcs) - covered:
          imported |= _imported_labels(package / src)
        imported.discard(_absolute(f":{name}", package))
        where = f"{package.relative_to(_ROOT)}:{name}"
        for label in sorted(imported - declared):
          problems.append(f"{where} imports {label}, not in its deps")
        for label in sorted(declared - targets):
          problems.append(f"{where} depends on {label}, which is no target")
        # Beyond imports, only the enclosing packages' __init__ libraries.
        packages = {
          "//" + "/".join(package.relative_to(_ROOT).parts[:n])
          for n in range(1, len(package.relative_to(_ROOT).parts) + 1)
        }
        libraries = {
          _absolute(f":{d[1:]}", package)
          for d in deps
          if d[1:] in rules and covered & set(rules[d[1:]][1])
        }
        for label in sorted(declared - imported - packages - libraries):
          problems.append(f"{where} depends on {label}, which it never imports")
    self.assertEqual(problems, [])


if __name__ == "__main__":
  tf.test.main()
