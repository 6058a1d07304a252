"""README.md and docs/*.md stay true to the code.

- Every ``ssl-bench`` command in their fenced code blocks parses with the real parser
  (``ssl_bench.launch.cli.build_parser``), option names spelled out in full.
- Every docs page is linked from the README, and every relative link (and its ``#anchor``) points
  to something that exists.
- docs/layout.md names every module of ``ssl_bench/``, ``methods/`` and ``experiments/``, and
  nothing else.
- The README's method example loads, trains a step and resolves its recipe against the current
  ``Method`` API.

A command is a line of a fenced block (lines ending in a backslash joined with the next) that
starts with ``ssl-bench`` or ``.venv/bin/ssl-bench``, after a leading ``$ `` and the trailing
comment are stripped; a line that chains commands (``&&``, ``|``, ``;``) is cut into its parts
first. Synopsis lines with placeholders (``METHOD...``, ``[--seed S]``, ``RUN_DIR``,
``<hash>``) are skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from ssl_bench.launch.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
MODULE_DIRS = ("ssl_bench", "methods", "experiments")

FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
PROGRAMS = ("ssl-bench", ".venv/bin/ssl-bench")
SHELL_OPERATORS = {"&&", "||", ";", "|", "&", ">", ">>", "2>", "2>&1", "<"}
# An upper-case word standing for a value (METHOD, RUN_DIR, N), not an environment variable ($USER).
UPPER_PLACEHOLDER = re.compile(r"(?<![$\w])[A-Z][A-Z0-9_]*(?![\w])")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
INLINE_CODE = re.compile(r"`[^`\n]*`")


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def fenced_blocks(text: str) -> list[tuple[str, str, int]]:
    """(info string, body, line number of the body's first line) of every fenced block."""
    return [
        (match.group(1).strip(), match.group(2), text.count("\n", 0, match.start(2)) + 1)
        for match in FENCE.finditer(text)
    ]


def logical_lines(body: str, first_line: int) -> list[tuple[int, str]]:
    """The block's lines with backslash continuations joined, each with the number of its first line."""
    lines: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for offset, line in enumerate(body.splitlines()):
        start, text = pending if pending is not None else (first_line + offset, "")
        text += line
        if line.rstrip().endswith("\\"):
            pending = (start, text.rstrip()[:-1] + " ")
            continue
        pending = None
        lines.append((start, text))
    if pending is not None:
        lines.append(pending)
    return lines


def is_placeholder(token: str) -> bool:
    return (
        "..." in token
        or "[" in token
        or "]" in token
        or re.search(r"<[^<>]+>", token) is not None
        or UPPER_PLACEHOLDER.search(token) is not None
    )


@dataclass(frozen=True)
class DocCommand:
    doc: str
    line: int
    text: str  # the command as written
    args: tuple[str, ...]  # what the parser gets (the program name left out)

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: {self.text}"


def commands_in(path: Path, name: str | None = None) -> tuple[list[DocCommand], list[DocCommand]]:
    """(the commands to check, the placeholder lines skipped) of one page, named ``name`` (default:
    its path in the repository)."""
    name = name or relative(path)
    checked, skipped = [], []
    for _, body, first_line in fenced_blocks(path.read_text()):
        for number, line in logical_lines(body, first_line):
            line = line.strip()
            if line.startswith("$ "):
                line = line[2:]
            try:
                tokens = shlex.split(line, comments=True)
            except ValueError:  # not shell (Python, TOML): it holds no command
                continue
            segments: list[list[str]] = [[]]
            for token in tokens:
                if token in SHELL_OPERATORS:
                    segments.append([])
                else:
                    segments[-1].append(token)
            for segment in segments:
                if not segment or segment[0] not in PROGRAMS:
                    continue
                command = DocCommand(name, number, shlex.join(segment), tuple(segment[1:]))
                (skipped if any(is_placeholder(token) for token in segment[1:]) else checked).append(command)
    return checked, skipped


def doc_commands() -> list[DocCommand]:
    return [command for page in PAGES for command in commands_in(page)[0]]


def strict_parser() -> argparse.ArgumentParser:
    """The real parser, with abbreviated options refused: the docs spell every option out."""
    parser = build_parser()
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                subparser.allow_abbrev = False
    return parser


def parse_error(args: tuple[str, ...]) -> str | None:
    """None when ``args`` parse; else argparse's message."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            strict_parser().parse_args(list(args))
    except SystemExit as exit:
        if exit.code not in (0, None):
            return stderr.getvalue().strip().splitlines()[-1] if stderr.getvalue().strip() else f"exit {exit.code}"
    return None


@pytest.mark.parametrize("command", doc_commands(), ids=lambda command: f"{command.doc}:{command.line}")
def test_every_documented_command_parses(command):
    error = parse_error(command.args)
    assert error is None, f"{command}\n  does not parse: {error}"


def test_the_commands_are_found():
    """The collection itself works: the README's demo command (inside a `&&` chain) and the
    docs' commands are there, and a misspelled command is caught."""
    commands = doc_commands()
    texts = {command.text for command in commands}
    assert ".venv/bin/ssl-bench run simclr tico vicreg barlow_twins" in texts
    assert len(commands) >= 25
    assert {command.doc for command in commands} >= {"README.md", "docs/cli.md", "docs/studies.md"}
    for wrong in (("rnu", "simclr"), ("run", "simclr", "--epoch", "1"), ("run", "simclr", "--sed", "0")):
        assert parse_error(wrong) is not None, wrong
    # Synopsis lines with placeholders are skipped, nothing else.
    skipped = [command for page in PAGES for command in commands_in(page)[1]]
    assert all(any(is_placeholder(token) for token in command.args) for command in skipped)


def test_a_misspelled_command_in_a_page_is_reported(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("```bash\nssl-bench run simclr --epochs 1 \\\n    --sedes 0 1   # a typo\n```\n")
    (command,), skipped = commands_in(page, "page.md")
    assert skipped == [] and command.line == 2
    assert "--sedes" in (parse_error(command.args) or "")


# --- links -----------------------------------------------------------------------------------
def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text())
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", text, flags=re.MULTILINE):
        base, anchor, n = slug(heading), slug(heading), 0
        while anchor in found:
            n += 1
            anchor = f"{base}-{n}"
        found.add(anchor)
    return found


def links(path: Path) -> list[str]:
    """The link targets of a page, outside code blocks and code spans."""
    text = INLINE_CODE.sub("", FENCE.sub("", path.read_text()))
    return LINK.findall(text)


@pytest.mark.parametrize("page", PAGES, ids=relative)
def test_relative_links_resolve(page):
    broken = []
    for target in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        resolved = (page.parent / file).resolve() if file else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading #{anchor} in {relative(resolved)}")
    assert not broken, f"{relative(page)} has broken links: {broken}"


def test_the_readme_links_every_docs_page():
    linked = {(README.parent / target.partition("#")[0]).resolve() for target in links(README)}
    missing = [relative(page) for page in DOCS if page.resolve() not in linked]
    assert not missing, f"README.md does not link {missing}"


# --- docs/layout.md --------------------------------------------------------------------------
def layout_modules() -> set[str]:
    """The module paths docs/layout.md's tree names, reconstructed from its indentation."""
    (body,) = [body for info, body, _ in fenced_blocks((ROOT / "docs" / "layout.md").read_text()) if info == "text"]
    entry = re.compile(r"^( *)((?:[\w.]+\.py|[\w.-]+/)(?:, [\w.]+\.py)*)(?:\s|$)")
    stack: list[str] = []
    modules = set()
    for line in body.splitlines():
        match = entry.match(line)
        if match is None:
            continue
        depth = len(match.group(1)) // 2
        del stack[depth:]
        names = match.group(2).split(", ")
        if names[0].endswith("/"):
            stack.append(names[0].rstrip("/"))
        else:
            modules.update("/".join([*stack, name]) for name in names)
    return modules


def test_layout_names_every_module():
    actual = {
        path.relative_to(ROOT).as_posix()
        for top in MODULE_DIRS
        for path in (ROOT / top).rglob("*.py")
        if "__pycache__" not in path.parts
    }
    listed = layout_modules()
    unlisted = sorted(path for path in actual - listed if not path.endswith("__init__.py"))
    stale = sorted(listed - actual)
    assert not unlisted and not stale, f"docs/layout.md misses {unlisted} and names missing modules {stale}"


# --- the README's method example ---------------------------------------------------------------
CHECK_EXAMPLE = """
import math, sys
import torch
from ssl_bench.recipes import resolve_config
from ssl_bench.method import get_method, load_method_file
from ssl_bench.models.backbones import build_backbone

(name,) = load_method_file(sys.argv[1])
backbone, feature_dim = build_backbone("tiny_convnet")
method = get_method(name)(backbone, feature_dim, [64, 32])
x = torch.rand(8, 3, 28, 28)
out = method(x, x.flip(-1))
out.loss.backward()
assert math.isfinite(out.loss.item()) and out.terms, out
assert all(p.grad is not None for p in method.projector.parameters())
print(name, resolve_config(name, "fashion-mnist", {}, []).identity_hash())
"""


def test_the_readme_method_example_works(tmp_path):
    files = [
        (info.split("file=", 1)[1], body)
        for info, body, _ in fenced_blocks(README.read_text())
        if info.startswith("python") and "file=" in info
    ]
    assert len(files) == 1, "README.md should hold one method example (a ```python file=... block)"
    target, body = files[0]
    path = tmp_path / target
    path.parent.mkdir(parents=True)
    path.write_text(body)
    # The command the README runs it with names the same file.
    assert any(f"--method-file {target}" in command.text for command in commands_in(README)[0])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", CHECK_EXAMPLE, str(path)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


# --- the README's study summary ----------------------------------------------------------------
def test_the_readme_study_summary_is_the_one_rendered_from_the_committed_reports():
    """The README says of each study what its report's CSV says, and nothing else."""
    from ssl_bench.study.summary import END, START, study_summary

    text = README.read_text()
    assert START in text and END in text, "README.md lost its study summary block"
    block = text.partition(START)[2].partition(END)[0].strip("\n")
    expected = study_summary(ROOT / "results" / "studies", "results/studies")
    assert block == expected, "run: .venv/bin/python -m ssl_bench.study.summary README.md results/studies"
