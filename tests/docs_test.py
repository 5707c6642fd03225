"""Builds the documentation site as `make docs` does, warnings as errors.

mkdocstrings renders the API reference (docs/api/) from the docstrings of
`sobolev_tf`; `--strict` fails the build on an `Args:` entry that names no
parameter, a broken link between pages or a nav entry without its page.
"""

import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import unittest

import tensorflow as tf

import sobolev_tf

_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)


@unittest.skipIf(
  importlib.util.find_spec("mkdocstrings") is None,
  "mkdocs and mkdocstrings are not installed; the site needs the `docs` "
  'extra: pip install -c requirements.txt -e ".[docs]"',
)
class DocsTest(tf.test.TestCase):
  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.site = tempfile.TemporaryDirectory()
    # One build (about 10 s) for both tests.
    cls.build = subprocess.run(
      [sys.executable, "-m", "mkdocs", "build", "--strict"]
      + ["--site-dir", cls.site.name],
      cwd=_ROOT,
      capture_output=True,
      text=True,
      check=False,
    )

  @classmethod
  def tearDownClass(cls):
    cls.site.cleanup()
    super().tearDownClass()

  def test_strict_build_succeeds(self):
    self.assertEqual(self.build.returncode, 0, msg=self.build.stderr)

  def test_every_public_name_has_an_entry(self):
    self.assertEqual(self.build.returncode, 0, msg=self.build.stderr)
    page = os.path.join(self.site.name, "docs", "api", "sobolev_tf")
    with open(os.path.join(page, "index.html"), encoding="utf-8") as f:
      anchors = set(re.findall(r'id="sobolev_tf\.(\w+)"', f.read()))
    self.assertEmpty(set(sobolev_tf.__all__) - anchors)


if __name__ == "__main__":
  tf.test.main()
