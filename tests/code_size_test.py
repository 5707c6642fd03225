"""The library reads in one sitting: small modules, small functions.

A module of `sobolev_tf` over 400 lines or a function over 60 is a sign
that it does several things; split it (see `../shared/STYLE.md`).
"""

import ast
import pathlib

import tensorflow as tf

_PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "sobolev_tf"
MODULE_LINES = 400
FUNCTION_LINES = 60


class CodeSizeTest(tf.test.TestCase):
  def test_modules_and_functions_are_small(self):
    too_long = []
    for path in sorted(_PACKAGE.rglob("*.py")):
      text = path.read_text()
      name = path.relative_to(_PACKAGE.parent).as_posix()
      if len(text.splitlines()) > MODULE_LINES:
        too_long.append(f"{name}: {len(text.splitlines())} lines")
      for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
          lines = node.end_lineno - node.lineno + 1
          if lines > FUNCTION_LINES:
            too_long.append(f"{name}:{node.lineno} {node.name}: {lines} lines")
    self.assertEqual(too_long, [])


if __name__ == "__main__":
  tf.test.main()
