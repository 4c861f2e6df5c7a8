"""The documentation says only what the code does.

Every command in a fenced shell block of README.md, benchmarks/README.md and docs/*.md, and in
the docstrings of configs/*.py, runs a module, script or make target that exists, with flags that
entry point defines (absl or argparse), values of the flags' types, and `--config.a.b=value`
overrides that name a field of the loaded config with a value of its type
(`tests/doc_commands.py` reads them). Every relative link of those Markdown files points to a
file that exists, and an anchor to one of its headings.

Nothing is trained or run: flags are read from the entry points' source, make targets with
`make -n`.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys

import pytest

from tests import doc_commands

COMMANDS = doc_commands.doc_commands()


def test_the_docs_show_the_commands_of_every_entry_point():
  programs = {c.program for c in COMMANDS}
  for program in (
    'cost_jax.main',
    'cost_jax.predict',
    'cost_jax.analyze',
    'cost_jax.export',
    'cost_jax.tools.import_mmaction2',
    'data_prep.build',
    'data_prep.kinetics400',
    'data_prep.mit',
    'data_prep.synthetic',
    'data_prep.verify',
    'make',
  ):
    assert program in programs, program
  # Each shell block or docstring that shows a python command yields at least one.
  where = {c.where for c in COMMANDS}
  for relative in doc_commands.doc_files():
    for line, block in doc_commands.shell_blocks(doc_commands.read(relative)):
      if 'python' in block and '-m ' in block:
        lines = range(line, line + block.count('\n') + 1)
        assert any(f'{relative}:{n}' in where for n in lines), f'{relative}:{line}'
  for relative in doc_commands.config_files():
    if 'python -m' in (ast.get_docstring(ast.parse(doc_commands.read(relative))) or ''):
      assert any(w.startswith(relative + ':') for w in where), relative


@pytest.mark.parametrize('command', COMMANDS, ids=str)
def test_command_runs_with_real_flags_and_config_fields(command, tmp_path):
  if command.kind == 'make' and shutil.which('make') is None:
    pytest.skip('make is not installed')
  assert doc_commands.problems(command, str(tmp_path)) == []


def test_the_checks_catch_what_they_should(tmp_path):
  def check(line: str) -> list[str]:
    (command,) = doc_commands.commands_in(line, 'example')
    return doc_commands.problems(command, str(tmp_path))

  main = 'python -m cost_jax.main --config=configs/costb_k400.py --workdir=runs/x'
  assert check(main + ' --config.batch_size=16') == []
  assert check(main + ' --config.batch_sise=16')  # no such field
  assert check(main + ' --config.batch_size=0.5')  # not an int
  assert check(main + ' --config.model.norm_eval=yes')  # not a bool
  assert check(main + ' --mode=evaluate')  # not one of the enum's values
  assert check(main + ' --steps=3')  # no such flag
  assert check('python -m cost_jax.predict --checkpoint d v.mp4 --views=all')  # not an int
  assert check('python -m data_prep.kinetics400 --root=R --output=O --videos_val=V') == []
  assert check('python -m data_prep.kinetics400 --root=R --output=O --video_val=V')
  assert check('python -m data_prep.verify DIR --nodecode_frames') == []
  assert check('python benchmarks/vs_pytorch.py --base-channels 8 --scaling') == []
  assert check('python benchmarks/vs_pytorch.py --base_channels 8')
  assert check('python -m cost_jax.trainer --config=configs/costb_k400.py')  # no such module
  assert check('python benchmarks/nothing.py')
  if shutil.which('make'):
    assert check('make demo') == []
    assert check('make deploy')


@pytest.mark.parametrize(
  'module, own_registry',
  [('cost_jax.main', False), ('data_prep.kinetics400', True), ('data_prep.build', True)],
)
def test_flags_read_from_source_are_those_the_entry_point_lists(module, own_registry):
  """The source reader against `--helpfull` (fast for these: no TensorFlow at import). With its
  own flag registry, a tool lists exactly its flags; absl's global one adds its own."""
  result = subprocess.run(
    [sys.executable, '-m', module, '--helpfull'],
    cwd=doc_commands.REPO,
    capture_output=True,
    text=True,
    timeout=120,
  )
  listed = set(
    re.findall(r'^\s+--(?:\[no\])?([A-Za-z_][\w.-]*)', result.stdout + result.stderr, re.M)
  )
  path = doc_commands.entry_file(doc_commands.Command('', 'module', module, ()))
  flags = doc_commands.entry_flags(path)
  read = set(flags.names) - set(doc_commands.ABSL_BUILTIN)
  assert read and read <= listed, read - listed
  if own_registry:
    assert all(flags.get(name) for name in listed), [n for n in listed if not flags.get(n)]


@pytest.mark.parametrize('relative', doc_commands.doc_files())
def test_relative_links_point_to_files_and_headings_that_exist(relative):
  assert doc_commands.relative_links(relative) == []


def test_slugs_are_githubs():
  assert doc_commands.slug('Time to the first training step (`first_step.py`)') == (
    'time-to-the-first-training-step-first_steppy'
  )
  assert doc_commands.slug("`make demo`'s recipe in both precisions") == (
    'make-demos-recipe-in-both-precisions'
  )
