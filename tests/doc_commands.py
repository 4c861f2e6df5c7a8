"""The commands the documentation shows, and what the code defines for them.

`doc_commands()` reads every fenced shell block of README.md, benchmarks/README.md and docs/*.md
and the docstrings of configs/*.py, and returns each command that runs something of this
repository: `python -m <module>`, `python <script>.py`, `<path>.sh` and `make <target>`.
`problems(command)` says what is wrong with one: a module or script that does not exist, a
`--flag` its entry point does not define, a flag value of the wrong type, a `--config.a.b=v`
override that names no field of the loaded config or has a value of the wrong type, a make
target that does not exist.

The flags of an entry point are read from its source, without importing or running it (several
entry points import TensorFlow, ~10 s each): the absl `DEFINE_*` and argparse `add_argument`
calls in the entry file, and in the functions of the repository it calls (e.g.
`cli.define_conversion_flags`), followed from module to module. A flag whose name is computed
is matched through its f-string (`videos_{split}` -> `videos_<anything>`); one built from other
data (a dataclass's fields) is not seen, so a doc that uses it fails here: list it by name then.

Paths in the commands are placeholders (`gs://BUCKET/...`, `video.mp4`): flags and config fields
are checked, not paths, except the `--config` file, which is loaded.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import glob
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from typing import Any

import ml_collections

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ('cost_jax', 'data_prep', 'benchmarks', 'configs', 'tests')
SUBSTITUTION = re.compile(r'\\?\$\([^)]*\)')  # $(...) run by the shell: a value we cannot know
PYTHON = re.compile(r'^(?:[^\s=]*/)?python[\d.]*$')
ABSL_BUILTIN = ('help', 'helpfull', 'helpshort', 'flagfile', 'undefok')


def doc_files() -> list[str]:
  """The Markdown files whose commands and links are checked, relative to the repository."""
  docs = sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, 'docs', '*.md')))
  return ['README.md', 'benchmarks/README.md', *docs]


def config_files() -> list[str]:
  return sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, 'configs', '*.py')))


def read(relative: str) -> str:
  with open(os.path.join(REPO, relative)) as f:
    return f.read()


# ---------------------------------------------------------------------------------------------
# Commands


@dataclasses.dataclass(frozen=True)
class Command:
  where: str  # file:line
  kind: str  # 'module' | 'script' | 'make'
  program: str  # cost_jax.main, benchmarks/feeding.py, make
  args: tuple[str, ...]

  def __str__(self) -> str:
    return f'{self.where} {self.program} {" ".join(self.args)}'.strip()


def shell_blocks(markdown: str) -> list[tuple[int, str]]:
  """(first line number, text) of each fenced bash/sh/shell block, or one with no language."""
  blocks = []
  for match in re.finditer(r'^```(\w*)\n(.*?)^```', markdown, re.DOTALL | re.MULTILINE):
    if match.group(1) in ('bash', 'sh', 'shell', ''):
      blocks.append((markdown.count('\n', 0, match.start(2)) + 1, match.group(2)))
  return blocks


def commands_in(text: str, source: str, first_line: int = 1, prose: bool = False) -> list[Command]:
  """The repository commands in shell text: a fenced block, or with `prose` a docstring, where a
  command stands at the start of a line or after a label (`Run:`, `or`)."""
  found = []
  lines = text.split('\n')
  number = first_line
  while lines:
    line, start = lines.pop(0), number
    number += 1
    while line.endswith('\\') and lines:  # a continued command
      line = line[:-1] + ' ' + lines.pop(0)
      number += 1
    line = SUBSTITUTION.sub('SUBSTITUTED', line)
    for segment in re.split(r'&&|\|\||;|\|', line):
      command = _command(segment, f'{source}:{start}', prose)
      if command:
        found.append(command)
  return found


def _is_command_word(word: str) -> bool:
  return bool(PYTHON.match(word) or word == 'make' or re.match(r'^[\w.-]*/[\w./-]*\.sh$', word))


def _command(segment: str, where: str, prose: bool = False) -> Command | None:
  try:
    words = shlex.split(segment.strip().strip('\'"'), comments=True)
  except ValueError:  # an unbalanced quote, e.g. inside gcloud's --command='...'
    words = shlex.split(segment.replace("'", ' ').replace('"', ' '), comments=True)
  if prose:  # a docstring: the command opens the line, or follows "Run:" or "or"
    if words[:1] and (words[0].endswith(':') or words[0] == 'or'):
      words = words[1:]
    if not (words and _is_command_word(words[0])):
      return None
  # Skip what precedes the program: NAME=value settings, srun, gcloud's --command='...
  for i, word in enumerate(words):
    if _is_command_word(word):
      words = words[i:]
      break
  else:
    return None
  head = words[0]
  if head == 'make':
    return Command(where, 'make', 'make', tuple(words[1:]))
  if head.endswith('.sh'):
    return Command(where, 'script', os.path.normpath(head), tuple(words[1:]))
  if len(words) > 2 and words[1] == '-m':
    return Command(where, 'module', words[2], tuple(words[3:]))
  if len(words) > 1 and words[1].endswith('.py'):
    return Command(where, 'script', os.path.normpath(words[1]), tuple(words[2:]))
  return None  # python -c ..., an interactive python


def docstring_commands(relative: str) -> list[Command]:
  """The commands in a Python file's module docstring (e.g. a config's `Run:` line)."""
  tree = ast.parse(read(relative))
  node = tree.body[0] if tree.body else None
  if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)):
    return []
  # The docstring as written: a backslash continuation stays a continuation.
  source = ast.get_source_segment(read(relative), node.value) or ''
  return commands_in(source.strip('"\''), relative, node.lineno, prose=True)


def doc_commands() -> list[Command]:
  commands = []
  for relative in doc_files():
    for line, block in shell_blocks(read(relative)):
      commands += commands_in(block, relative, line)
  for relative in config_files():
    commands += docstring_commands(relative)
  return commands


# ---------------------------------------------------------------------------------------------
# What an entry point defines


@dataclasses.dataclass(frozen=True)
class Flag:
  kind: str  # bool | int | float | enum | config | str
  choices: tuple[str, ...] | None = None


@dataclasses.dataclass
class Flags:
  names: dict[str, Flag] = dataclasses.field(default_factory=dict)
  patterns: list[tuple[re.Pattern, Flag]] = dataclasses.field(default_factory=list)
  absl: bool = False

  def get(self, name: str) -> Flag | None:
    if name in self.names:
      return self.names[name]
    for pattern, flag in self.patterns:
      if pattern.fullmatch(name):
        return flag
    if self.absl and name.startswith('no'):  # absl's --noFLAG for a boolean
      negated = self.names.get(name[2:])
      if negated and negated.kind == 'bool':
        return negated
    return None


@functools.lru_cache(maxsize=None)
def _tree(path: str) -> ast.Module:
  with open(path) as f:
    return ast.parse(f.read(), path)


def module_file(dotted: str, near: str | None = None) -> str | None:
  """The repository file of module `dotted` (a package's __init__.py / __main__.py, or a script's
  sibling module when `near` is the script's folder), else None."""
  base = os.path.join(REPO, *dotted.split('.'))
  candidates = [base + '.py', os.path.join(base, '__init__.py')]
  if near and '.' not in dotted:
    candidates.append(os.path.join(near, dotted + '.py'))
  return next((c for c in candidates if os.path.isfile(c)), None)


@functools.lru_cache(maxsize=None)
def _imports(path: str) -> dict[str, tuple[str, str | None]]:
  """Names the file binds to repository modules: name -> (file, None) for a module, or (file,
  attribute) for a name imported from one."""
  near = os.path.dirname(path)
  bound = {}
  for node in ast.walk(_tree(path)):
    if isinstance(node, ast.Import):
      for alias in node.names:
        found = module_file(alias.name, near)
        if found and (alias.asname or '.' not in alias.name):
          bound[alias.asname or alias.name] = (found, None)
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      for alias in node.names:
        name = alias.asname or alias.name
        submodule = module_file(f'{node.module}.{alias.name}')
        parent = module_file(node.module, near)
        if submodule:
          bound[name] = (submodule, None)
        elif parent:
          bound[name] = (parent, alias.name)
  return bound


def _function(path: str, name: str) -> ast.FunctionDef | None:
  for node in _tree(path).body:
    if isinstance(node, ast.FunctionDef) and node.name == name:
      return node
  return None


def _constant(path: str, node: ast.AST) -> Any:
  """A literal, or a module-level name assigned a literal in `path`; None otherwise."""
  if isinstance(node, ast.Name):
    for statement in _tree(path).body:
      if isinstance(statement, ast.Assign) and any(
        isinstance(t, ast.Name) and t.id == node.id for t in statement.targets
      ):
        node = statement.value
        break
  try:
    return ast.literal_eval(node)
  except ValueError:
    return None


def _name_matcher(node: ast.AST) -> str | re.Pattern | None:
  if isinstance(node, ast.Constant) and isinstance(node.value, str):
    return node.value
  if isinstance(node, ast.JoinedStr):  # f'videos_{split}' -> videos_.+
    parts = [re.escape(v.value) if isinstance(v, ast.Constant) else r'[\w-]+' for v in node.values]
    return re.compile(''.join(parts))
  return None


_ABSL_KINDS = {
  'DEFINE_bool': 'bool',
  'DEFINE_boolean': 'bool',
  'DEFINE_integer': 'int',
  'DEFINE_float': 'float',
  'DEFINE_enum': 'enum',
  'DEFINE_config_file': 'config',
  'DEFINE_config_dict': 'config',
}


def _argument(call: ast.Call, index: int, keyword: str) -> ast.AST | None:
  if len(call.args) > index:
    return call.args[index]
  return next((k.value for k in call.keywords if k.arg == keyword), None)


def _record(flags: Flags, name: str | re.Pattern | None, flag: Flag) -> None:
  if isinstance(name, str):
    flags.names[name] = flag
  elif name is not None:
    flags.patterns.append((name, flag))


def _absl_flag(path: str, call: ast.Call, function: str, flags: Flags) -> None:
  flags.absl = True
  kind = _ABSL_KINDS.get(function, 'str')
  choices = None
  if kind == 'enum':
    values = _constant(path, _argument(call, 2, 'enum_values'))
    choices = tuple(values) if isinstance(values, (list, tuple)) else None
  _record(flags, _name_matcher(_argument(call, 0, 'name')), Flag(kind, choices))


def _argparse_flag(path: str, call: ast.Call, flags: Flags) -> None:
  keywords = {k.arg: k.value for k in call.keywords}
  action = _constant(path, keywords['action']) if 'action' in keywords else None
  kind = 'str'
  if action in ('store_true', 'store_false', 'count'):
    kind = 'bool'
  elif isinstance(keywords.get('type'), ast.Name) and keywords['type'].id in ('int', 'float'):
    kind = keywords['type'].id
  choices = _constant(path, keywords['choices']) if 'choices' in keywords else None
  if isinstance(choices, (list, tuple)) and kind == 'str':
    kind, choices = 'enum', tuple(str(c) for c in choices)
  else:
    choices = None
  for option in call.args:
    if isinstance(option, ast.Constant) and str(option.value).startswith('--'):
      _record(flags, option.value[2:], Flag(kind, choices))
  flags.names.setdefault('help', Flag('bool'))


def _collect(path: str, root: ast.AST, flags: Flags, seen: set) -> None:
  """Flags defined under `root` in `path`, following calls into this file's and other repository
  modules' functions."""
  for node in ast.walk(root):
    if not isinstance(node, ast.Call):
      continue
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, 'id', None)
    if name is None:
      continue
    if name.startswith('DEFINE_'):
      _absl_flag(path, node, name, flags)
      continue
    if name == 'add_argument':
      _argparse_flag(path, node, flags)
      continue
    target = None
    if isinstance(func, ast.Name):
      bound = _imports(path).get(name)
      if bound and bound[1]:
        target = (bound[0], bound[1])
      elif _function(path, name):
        target = (path, name)
    elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
      bound = _imports(path).get(func.value.id)
      if bound and bound[1] is None:
        target = (bound[0], name)
    if target and target not in seen:
      seen.add(target)
      definition = _function(*target)
      if definition is not None:
        _collect(target[0], definition, flags, seen)


@functools.lru_cache(maxsize=None)
def entry_flags(path: str) -> Flags:
  """The flags the entry point in `path` (a .py file of the repository) accepts."""
  flags = Flags()
  _collect(path, _tree(path), flags, set())
  if flags.absl:
    for name in ABSL_BUILTIN:
      flags.names.setdefault(name, Flag('bool'))
  return flags


# ---------------------------------------------------------------------------------------------
# Configs


@functools.lru_cache(maxsize=None)
def _config_module(path: str):
  spec = importlib.util.spec_from_file_location(f'_doc_config_{abs(hash(path))}', path)
  module = importlib.util.module_from_spec(spec)
  if REPO not in sys.path:
    sys.path.insert(0, REPO)
  spec.loader.exec_module(module)
  return module


def load_config(relative: str) -> ml_collections.ConfigDict:
  """A fresh `get_config()` of a config file of the repository."""
  path = os.path.join(REPO, relative)
  assert os.path.isfile(path), f'--config={relative}: no such file'
  return _config_module(path).get_config()


def is_placeholder(value: str) -> bool:
  """A value the reader fills in: `$I`, `N`, `DIR`, `PATH_OR_URL`, a shell substitution."""
  return '$' in value or 'SUBSTITUTED' in value or bool(re.fullmatch(r'[A-Z][A-Z0-9_]*', value))


def _convert(value: str, like):
  if isinstance(like, bool):
    assert value.lower() in ('true', 'false'), f'{value!r} is not a bool'
    return value.lower() == 'true'
  if isinstance(like, (int, float)):
    return type(like)(value)
  if isinstance(like, (tuple, list)):
    parsed = ast.literal_eval(value)
    assert isinstance(parsed, (tuple, list)), f'{value!r} is not a sequence'
    return type(like)(parsed)
  return value


def override(config: ml_collections.ConfigDict, dotted: str, value: str) -> None:
  """Sets config.<dotted> = value as `--config.<dotted>=<value>` would; AssertionError for a field
  the config does not have, ValueError for a value of the wrong type."""
  *parents, leaf = dotted.split('.')
  node = config
  for part in parents:
    assert isinstance(node, ml_collections.ConfigDict) and part in node, (
      f'--config.{dotted}: no field {part!r}'
    )
    node = node[part]
  assert isinstance(node, ml_collections.ConfigDict) and leaf in node, (
    f'--config.{dotted}: no such field'
  )
  if not is_placeholder(value):
    node[leaf] = _convert(value, node[leaf])


def split_option(argument: str) -> tuple[str, str | None]:
  """'--name=value' -> ('name', 'value'); '--name' -> ('name', None)."""
  name, equals, value = argument[2:].partition('=')
  return name, (value if equals else None)


# ---------------------------------------------------------------------------------------------
# Checking a command


def entry_file(command: Command) -> str | None:
  """The repository file a module or script command runs; None for another package's module."""
  if command.kind == 'module':
    if command.program.split('.')[0] not in PACKAGES:
      return None
    base = os.path.join(REPO, *command.program.split('.'))
    for candidate in (base + '.py', os.path.join(base, '__main__.py')):
      if os.path.isfile(candidate):
        return candidate
    return ''
  return os.path.join(REPO, command.program)


def problems(command: Command, scratch: str) -> list[str]:
  """What is wrong with `command` (empty if nothing); `scratch` is a directory for make -n."""
  if command.kind == 'make':
    return _make_problems(command, scratch)
  path = entry_file(command)
  if path is None:  # python -m venv, python -m pytest: installed, not ours
    top = command.program.split('.')[0]
    return [] if importlib.util.find_spec(top) else [f'no module {command.program}']
  if not os.path.isfile(path):
    return [f'{command.program}: no such module or script in the repository']
  if not path.endswith('.py'):
    return []
  return _argument_problems(command, entry_flags(path))


def _argument_problems(command: Command, flags: Flags) -> list[str]:
  found = []
  words = [w.strip('[]') for w in command.args]
  words = [w for w in words if w]
  configs = {n for n, f in flags.names.items() if f.kind == 'config'}
  config_file, overrides = None, []
  i = 0
  while i < len(words):
    word = words[i]
    i += 1
    if not word.startswith('--') or word == '--':
      continue  # a positional argument (a video, a checkpoint path) or a short option
    name, value = split_option(word)
    root = name.split('.')[0]
    if '.' in name and root in configs:
      if value is None:
        found.append(f'{word}: a config override needs =VALUE')
      else:
        overrides.append((name[len(root) + 1 :], value))
      continue
    flag = flags.get(name)
    if flag is None:
      found.append(f'{command.program} has no flag --{name}')
      continue
    if flag.kind == 'bool':
      if value is not None and value.lower() not in ('true', 'false', '1', '0'):
        found.append(f'--{name}={value}: a boolean flag')
      continue
    if value is None:  # --flag VALUE
      if i >= len(words) or words[i].startswith('--'):
        found.append(f'--{name} needs a value')
        continue
      value = words[i]
      i += 1
    if flag.kind == 'config':
      config_file = value
    elif not is_placeholder(value):
      found += _value_problems(name, value, flag)
  if overrides and not config_file:
    found.append(f'config overrides {overrides} without --config=FILE')
  if config_file and not is_placeholder(config_file):
    try:
      config = load_config(config_file)
      for dotted, value in overrides:
        override(config, dotted, value)
    except (AssertionError, ValueError, SyntaxError) as e:
      found.append(f'--config={config_file}: {e}')
  return found


def _value_problems(name: str, value: str, flag: Flag) -> list[str]:
  try:
    if flag.kind in ('int', 'float'):
      {'int': int, 'float': float}[flag.kind](value)
  except ValueError:
    return [f'--{name}={value}: not an {flag.kind}']
  if flag.kind == 'enum' and flag.choices and value not in flag.choices:
    return [f'--{name}={value}: not one of {flag.choices}']
  return []


def _make_problems(command: Command, scratch: str) -> list[str]:
  targets = [w for w in command.args if '=' not in w and not w.startswith('-')]
  variables = [w for w in command.args if '=' in w and not w.startswith('VENV=')]
  found = []
  for target in targets or ['']:
    result = subprocess.run(
      ['make', '-n', *filter(None, [target]), *variables, f'VENV={scratch}/venv'],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=60,
    )
    if result.returncode != 0:
      found.append(f'make {target}: {result.stderr.strip()}')
  return found


# ---------------------------------------------------------------------------------------------
# Links


def slug(heading: str) -> str:
  """The anchor GitHub gives a Markdown heading."""
  text = re.sub(r'\[([^\]]*)\]\([^)]*\)', r'\1', heading.strip()).lower()
  return re.sub(r'[^\w\- ]', '', text).replace(' ', '-')


@functools.lru_cache(maxsize=None)
def anchors(relative: str) -> frozenset[str]:
  text = re.sub(r'^```.*?^```', '', read(relative), flags=re.DOTALL | re.MULTILINE)
  seen: dict[str, int] = {}
  found = set()
  for heading in re.findall(r'^#{1,6}\s+(.*?)\s*#*$', text, re.MULTILINE):
    base = slug(heading)
    count = seen.get(base, 0)
    seen[base] = count + 1
    found.add(base if count == 0 else f'{base}-{count}')
  return frozenset(found)


def relative_links(relative: str) -> list[tuple[str, str]]:
  """(link, problem) for each relative link of a Markdown file that does not resolve."""
  text = read(relative)
  text = re.sub(r'^```.*?^```', '', text, flags=re.DOTALL | re.MULTILINE)
  text = re.sub(r'`[^`\n]*`', '', text)
  broken = []
  for target in re.findall(r'\]\(([^)\s]+)\)', text):
    if re.match(r'^[a-z][a-z0-9+.-]*:', target):  # https:, mailto:
      continue
    path, _, anchor = target.partition('#')
    resolved = os.path.normpath(os.path.join(os.path.dirname(relative), path)) if path else relative
    if not os.path.exists(os.path.join(REPO, resolved)):
      broken.append((target, f'{resolved} does not exist'))
    elif anchor and resolved.endswith('.md') and anchor not in anchors(resolved):
      broken.append((target, f'{resolved} has no heading #{anchor}'))
  return broken
