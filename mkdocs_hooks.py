"""mkdocs hooks: the site keeps the repository's layout.

The pages link to each other, to their data (jsonl, png) and to README files
outside `docs/` by repository paths, as GitHub renders them
(`docs/RESULTS.md`, `../teachers/README.md`). Serving every file at its
repository path, with README.md as the index, keeps each such link valid
under `mkdocs build --strict`.
"""

import pathlib

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File
from mkdocs.structure.files import Files
from mkdocs.structure.files import InclusionLevel

# Pages outside `docs_dir` that the others link to; README.md is the index.
_REPOSITORY_PAGES = ("README.md", "teachers/README.md", "examples/README.md")
# Files outside `docs_dir` that pages link to, served as they are.
_REPOSITORY_FILES = ("examples/*.ipynb",)


def on_files(files: Files, config: MkDocsConfig) -> Files:
  """Moves `docs_dir`'s files to their repository paths; adds the READMEs.

  Args:
    files: the site's files: `docs_dir`'s and the theme's.
    config: the loaded `mkdocs.yml`.

  Returns:
    The theme's files as they were, `docs_dir`'s at their repository paths
    and the READMEs.
  """
  root = pathlib.Path(config.config_file_path).resolve().parent
  docs = pathlib.Path(config.docs_dir).resolve().relative_to(root).as_posix()

  def repository_file(path: str, inclusion: InclusionLevel) -> File:
    return File(
      path,
      str(root),
      config.site_dir,
      config.use_directory_urls,
      inclusion=inclusion,
    )

  moved = [
    repository_file(f"{docs}/{f.src_uri}", f.inclusion)
    if f.src_dir == config.docs_dir
    else f
    for f in files
  ]
  readmes = [
    repository_file(path, InclusionLevel.INCLUDED) for path in _REPOSITORY_PAGES
  ]
  linked = [
    repository_file(path.relative_to(root).as_posix(), InclusionLevel.INCLUDED)
    for pattern in _REPOSITORY_FILES
    for path in sorted(root.glob(pattern))
  ]
  return Files(moved + readmes + linked)
