"""The README's and docs/'s code blocks: every Python block runs as written, every shell command
names a real make target, module and flags.

Python blocks (```` ```python ````) are run verbatim, each in a fresh interpreter of the stack
under test, in a temporary directory (data caches there too). Shell blocks (```` ```bash ````)
hold commands that take minutes to hours (training runs, ``make test``), so they are checked, not
run: a ``make X`` must name a target of the Makefile, and a ``python -m MODULE ARGS`` must name
an importable module whose argument parser (``MODULE.build_parser()``, where it has one) accepts
``ARGS``; ``for V in A B ...; do`` loops substitute ``A`` for ``$V``. Other commands (``pip``,
``tfds``, ``source``, ...) are listed in ``SKIPPED_PROGRAMS``; an unknown one fails the test, so a
new kind of command gets a rule here.
"""

from __future__ import annotations

import importlib
import importlib.util
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SKIPPED_PROGRAMS = {"pip", "tfds", "source", "wait", "done", "cd", "git", "for", "do"}
PYTHONS = re.compile(r"^(?:\S*/)?python3?$")
BLOCK_TIMEOUT_S = 300


def code_blocks(text: str) -> list[tuple[str, str]]:
    """``[(language, source), ...]`` of the fenced code blocks of a markdown text.

    Indented fences (inside list items) count; the fence's indentation is removed from the
    block's lines.

    Example:
      >>> code_blocks("a\\n```python\\nx = 1\\n```\\n  ```bash\\n  make test\\n  ```\\n")
      [('python', 'x = 1\\n'), ('bash', 'make test\\n')]
    """
    out = []
    for m in re.finditer(r"^( *)```(\w*)\n(.*?)^\1```[ \t]*$", text, re.S | re.M):
        indent, lang, body = m.group(1), m.group(2), m.group(3)
        lines = [line.removeprefix(indent) for line in body.splitlines(keepends=True)]
        out.append((lang, "".join(lines)))
    return out


def shell_commands(source: str) -> list[list[str]]:
    """The simple commands of a shell block as argument lists, loop variables substituted.

    Line continuations are joined, comments dropped, lines split at ``;``, ``&&``, ``||``, ``|``
    and ``&``, and leading ``NAME=value`` assignments removed.

    Example:
      >>> shell_commands("for k in a b; do\\n  X=1 run --k $k &  # c\\ndone; wait\\n")
      [['for', 'k', 'in', 'a', 'b'], ['do'], ['run', '--k', 'a'], ['done'], ['wait']]
    """
    text = source.replace("\\\n", " ")
    variables: dict[str, str] = {}
    for m in re.finditer(r"\bfor (\w+) in (\S+)", text):
        variables[m.group(1)] = m.group(2)
    commands = []
    for line in text.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        current: list[str] = []
        for token in list(lexer) + [";"]:
            if token and set(token) <= set(";&|"):
                if current:
                    commands.append(current)
                current = []
                continue
            if not current and re.fullmatch(r"[A-Za-z_]\w*=.*", token):
                continue  # an environment assignment before the command
            current.append(
                re.sub(r"\$(\w+)", lambda m: variables.get(m.group(1), m.group(0)), token)
            )
    return commands


def _blocks(*languages: str) -> list:
    """One pytest param per code block of README.md and docs/*.md in one of ``languages``."""
    params = []
    for path in DOCS:
        for i, (lang, source) in enumerate(code_blocks(path.read_text(encoding="utf-8"))):
            if lang in languages:
                params.append(pytest.param(source, id=f"{path.name}-{i}"))
    return params


def test_code_blocks_parser():
    text = "x\n```python\nimport os\n```\n- item\n  ```bash\n  make demo  # go\n  ```\n```\nplain\n```\n"
    assert code_blocks(text) == [
        ("python", "import os\n"),
        ("bash", "make demo  # go\n"),
        ("", "plain\n"),
    ]
    assert shell_commands("make demo   # creates .venv\nmake test\n") == [
        ["make", "demo"],
        ["make", "test"],
    ]
    assert shell_commands("A=1 B=2 python -m m --x 1 \\\n  --y 2 &\n") == [
        ["python", "-m", "m", "--x", "1", "--y", "2"]
    ]


def test_readme_has_blocks_of_every_kind():
    blocks = code_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    languages = [lang for lang, _ in blocks]
    assert languages.count("python") >= 4, "one example per method (KO, KITINet, KINN, diffusion)"
    assert "bash" in languages
    assert all(lang in ("python", "bash") for lang in languages), (
        "give every README block a language (python or bash) so that this test checks it"
    )


@pytest.mark.parametrize("source", _blocks("python"))
def test_python_block_runs_as_written(source, tmp_path):
    script = tmp_path / "block.py"
    script.write_text(source, encoding="utf-8")
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "KINETIX_CACHE": str(tmp_path / "cache"),
        "MPLBACKEND": "agg",
        "MPLCONFIGDIR": str(tmp_path / "mpl"),
        "JAX_PLATFORMS": "cpu",
    }
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT_S,
    )
    assert proc.returncode == 0, f"this block fails as written:\n{source}\n{proc.stderr[-3000:]}"


def _makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([\w.-]+):", text, re.M))


@pytest.mark.parametrize("source", _blocks("bash", "sh", "shell"))
def test_shell_block_names_real_targets_modules_and_flags(source):
    commands = shell_commands(source)
    assert commands, source
    targets = _makefile_targets()
    for argv in commands:
        program = argv[0]
        if program == "make":
            for target in argv[1:]:
                if not target.startswith("-") and "=" not in target:
                    assert target in targets, f"`make {target}`: no such Makefile target"
        elif PYTHONS.match(program) and argv[1:2] == ["-m"]:
            module, args = argv[2], argv[3:]
            if module == "venv":
                continue
            assert importlib.util.find_spec(module), f"`python -m {module}`: no such module"
            mod = importlib.import_module(module)
            if hasattr(mod, "build_parser"):
                try:
                    mod.build_parser().parse_args(args)
                except SystemExit as e:
                    if e.code == 0:  # --help
                        continue
                    pytest.fail(f"`python -m {module} {shlex.join(args)}` is refused ({e})")
        elif pathlib.PurePath(program).name in SKIPPED_PROGRAMS:
            continue
        else:
            pytest.fail(f"no rule to check the command {shlex.join(argv)!r}: add one")


def test_make_demo_writes_to_an_ignored_directory():
    """``make demo`` on a fresh clone must leave ``git status`` clean (issue 14)."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    out = re.search(r"^OUT\s*\?=\s*(\S+)", makefile, re.M).group(1)
    ignored = [
        line.strip().strip("/")
        for line in (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert any(out == p or out.startswith(p + "/") for p in ignored), (
        f"make demo writes to {out}, which .gitignore does not ignore"
    )
    assert "$(OUT)" in makefile.split("\ndemo:", 1)[1].split("\n\n", 1)[0]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_relative_links_resolve(path):
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"^( *)```.*?^\1```", "", text, flags=re.S | re.M)  # links in code do not count
    missing = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", target) or target.startswith("#"):
            continue
        file = target.split("#", 1)[0]
        if not (path.parent / file).exists():
            missing.append(target)
    assert not missing, f"{path.name} links to files that do not exist: {missing}"
