"""The notebooks in notebooks/: each runs top to bottom in smoke mode and matches its text pair.

Every ``notebooks/NAME.ipynb`` has a paired ``notebooks/NAME.py`` in jupytext's percent
format (cells start at ``# %%`` or ``# %% [markdown]``). The ``.py`` file is the one to edit
and review; regenerate the notebook from it with ``jupytext --sync notebooks/NAME.py`` or,
without jupytext, ``python -m tests.test_notebooks --write`` (writes every notebook with empty
outputs). The tests check that the pair has not drifted, that notebooks are committed without
outputs, that each has its Colab badge and guarded install cell, and they run each notebook with
``KINETIX_SMOKE=1`` (tiny sizes) in a temporary directory, checking the lines it prints.
"""

from __future__ import annotations

import importlib.metadata
import json
import pathlib
import re
import sys
import time

import pytest

NOTEBOOK_DIR = pathlib.Path(__file__).parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
REPO_URL = "github.com/kinetix-dev/kinetix"
TIMEOUT_S = 240  # per notebook, smoke mode (each takes well under a minute on an idle CPU)

# lines each notebook must print in smoke mode: (regex, check on its first group or None)
MARKERS: dict[str, list[tuple[str, object]]] = {
    "ko_quickstart": [
        (r"backend: (\w+)", None),
        (r"collision rate hidden/kernel: ([0-9.]+)", lambda v: float(v) > 0),
        (r"ko_hard \+ adamw .*test accuracy ([0-9.]+)", lambda v: 0 <= float(v) <= 1),
        (r"adamw .*mean\|cos\| ([0-9.]+)", lambda v: 0 <= float(v) <= 1),
    ],
    "kitinet": [
        (r"backend: (\w+)", None),
        (r"KineticResidual collision rate: ([0-9.]+)", lambda v: float(v) > 0),
        (r"eval mode equals x \+ v: (\w+)", lambda v: v == "True"),
        (r"collision rate layers/0/\S+: ([0-9.]+)", lambda v: float(v) > 0),
        (r"kinetic FNO .*test rel\. L2 ([0-9.]+)", lambda v: float(v) < 10),
    ],
    "kinn": [
        (r"backend: (\w+)", None),
        (r"cell matches the exact solution: (\w+)", lambda v: v == "True"),
        (r"FNO-KINN .*test rel\. L2 ([0-9.]+)", lambda v: float(v) < 10),
    ],
    "diffusion_digits": [
        (r"backend: (\w+)", None),
        (r"diffusion conserves the sum: (\w+)", lambda v: v == "True"),
        (r"coin +accuracy ([0-9.]+)", lambda v: 0 <= float(v) <= 1),
        (r"diffresnet +accuracy ([0-9.]+)", lambda v: 0 <= float(v) <= 1),
    ],
    "scaling": [
        (r"backend: (\w+)", None),
        (r"scaling over (\d+) devices", lambda v: int(v) > 1),  # 8 forced CPU devices
        # sharded jit and pmap reproduce the 1-device run to float32 rounding ...
        (r"sharded jit vs 1 device: max \|param diff\| (\S+),", lambda v: float(v) < 1e-4),
        (r"sharded jit vs 1 device: .*max \|loss diff\| (\S+)", lambda v: float(v) < 1e-4),
        (r"pmap vs 1 device: max \|param diff\| (\S+),", lambda v: float(v) < 1e-4),
        (r"pmap vs 1 device: .*max \|loss diff\| (\S+)", lambda v: float(v) < 1e-4),
        # ... while other collisions (another KO key) move the parameters far beyond that
        (r"another KO key vs 1 device: max \|param diff\| (\S+)", lambda v: float(v) > 1e-3),
        (r"KO collision rate hidden/kernel: ([0-9.]+)", lambda v: float(v) > 0),
        (
            r"bare JAX sharded jit vs train.loop on 1 device: max \|param diff\| (\S+)",
            lambda v: float(v) < 1e-4,
        ),
        (r"two_processes: processes (\d+), devices 8, steps 5", lambda v: v == "2"),
        (r"2 processes vs 1 process: max \|param diff\| (\S+)", lambda v: float(v) < 1e-4),
    ],
}


def percent_cells(text: str) -> list[tuple[str, str]]:
    """``[(cell_type, source), ...]`` of a jupytext percent-format script.

    Args:
      text: the script; an optional leading ``# ---`` ... ``# ---`` YAML header is skipped.

    Returns:
      One ``("code" | "markdown", source)`` per ``# %%`` cell, blank lines around each cell
      removed; a markdown cell's lines lose their leading ``# `` (or ``#``).

    Example:
      >>> percent_cells("# %% [markdown]\\n# # Title\\n\\n# %%\\nx = 1\\n")
      [('markdown', '# Title'), ('code', 'x = 1')]
    """
    lines = text.splitlines()
    if lines and lines[0] == "# ---":
        end = lines.index("# ---", 1)
        lines = lines[end + 1 :]
    cells: list[tuple[str, list[str]]] = []
    for line in lines:
        if line.startswith("# %%"):
            kind = "markdown" if "[markdown]" in line else "code"
            cells.append((kind, []))
        elif cells:
            cells[-1][1].append(line)
        elif line.strip():
            raise ValueError(f"text before the first '# %%' cell: {line!r}")
    out = []
    for kind, body in cells:
        while body and not body[0].strip():
            body.pop(0)
        while body and not body[-1].strip():
            body.pop()
        if kind == "markdown":
            body = [line[2:] if line.startswith("# ") else line.removeprefix("#") for line in body]
        out.append((kind, "\n".join(body)))
    return out


def notebook_cells(nb: dict) -> list[tuple[str, str]]:
    """``[(cell_type, source), ...]`` of a notebook's JSON (markdown and code cells)."""
    out = []
    for cell in nb["cells"]:
        source = cell["source"]
        out.append((cell["cell_type"], "".join(source) if isinstance(source, list) else source))
    return out


def notebook_json(cells: list[tuple[str, str]]) -> dict:
    """An nbformat-4 notebook with these cells and no outputs (what is committed)."""

    def lines(source: str) -> list[str]:
        return source.splitlines(keepends=True)

    nb_cells = []
    for i, (kind, source) in enumerate(cells):
        cell = {"cell_type": kind, "id": f"cell-{i}", "metadata": {}, "source": lines(source)}
        if kind == "code":
            cell |= {"execution_count": None, "outputs": []}
        nb_cells.append(cell)
    return {
        "cells": nb_cells,
        "metadata": {
            "jupytext": {"formats": "ipynb,py:percent"},
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def _read(path: pathlib.Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_percent_parser_against_a_hand_written_notebook():
    text = (
        "# ---\n# jupyter:\n#   kernelspec:\n#     name: python3\n# ---\n\n"
        "# %% [markdown]\n# # Title\n#\n# Some *text*.\n\n# %%\nimport os\n\nx = 1\n\n\n"
        "# %%\n# a comment\nprint(x)\n"
    )
    assert percent_cells(text) == [
        ("markdown", "# Title\n\nSome *text*."),
        ("code", "import os\n\nx = 1"),
        ("code", "# a comment\nprint(x)"),
    ]
    with pytest.raises(ValueError, match="before the first"):
        percent_cells("x = 1\n# %%\n")


def test_every_notebook_has_its_markers_and_pair():
    assert {p.stem for p in NOTEBOOKS} == set(MARKERS), "add the new notebook to MARKERS"
    assert (NOTEBOOK_DIR / "ko_quickstart.ipynb").exists()  # the README links it
    assert sorted(p.stem for p in NOTEBOOK_DIR.glob("*.py")) == sorted(p.stem for p in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_matches_its_text_pair(path):
    pair = path.with_suffix(".py")
    expected = percent_cells(pair.read_text(encoding="utf-8"))
    assert notebook_cells(_read(path)) == expected, (
        f"{path.name} and {pair.name} differ: edit the .py file, then run "
        "`python -m tests.test_notebooks --write` (or `jupytext --sync`)."
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_clean_with_badge_and_guarded_install(path):
    nb = _read(path)
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert not cell.get("outputs") and cell.get("execution_count") is None, (
                f"{path.name} holds outputs: clear them (python -m tests.test_notebooks --write)."
            )
    cells = notebook_cells(nb)
    assert cells[0][0] == "markdown"
    badge = f"https://colab.research.google.com/github/{REPO_URL.split('/', 1)[1]}/blob/main/notebooks/{path.name}"
    assert badge in cells[0][1], f"the first cell of {path.name} needs the Colab badge {badge}"
    setup = next(source for kind, source in cells if kind == "code")
    assert 'IN_COLAB = "google.colab" in sys.modules' in setup
    # the install runs only under `if IN_COLAB:`; every pip argument is pinned (== or @ref)
    install = setup.split("if IN_COLAB:", 1)[1].split("\nimport jax", 1)[0]
    assert "pip" in install and REPO_URL in install
    pins = re.findall(r'"([a-z][\w.\-\[\]]*==[\w.]+)"', install)
    assert {p.split("==")[0] for p in pins} >= {"flax", "optax", "orbax-checkpoint"}
    assert 'SMOKE = os.environ.get("KINETIX_SMOKE") == "1"' in setup and "SCALE = " in setup


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_smoke_mode(path, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    # the kernel inherits this environment: smoke sizes, caches and plots under tmp_path
    monkeypatch.setenv("KINETIX_SMOKE", "1")
    monkeypatch.setenv("KINETIX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    monkeypatch.setenv("MPLBACKEND", "agg")
    monkeypatch.delenv("XLA_FLAGS", raising=False)  # one CPU device, as on a laptop
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    t0 = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - t0
    print(f"{path.name}: {elapsed:.1f} s")
    assert elapsed < TIMEOUT_S
    text = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    # the kernel ran the stack under test (the venv of this pytest), not another Python
    kernel_jax = re.search(r"JAX (\S+) \| backend", text)
    assert kernel_jax and kernel_jax.group(1) == importlib.metadata.version("jax"), text[:500]
    for pattern, check in MARKERS[path.stem]:
        found = re.search(pattern, text)
        assert found, f"{path.name} did not print a line matching {pattern!r}:\n{text}"
        if check is not None:
            assert check(found.group(1)), f"{path.name}: {found.group(0)!r} fails its check"
    assert not list(NOTEBOOK_DIR.glob("*cache*")), "a notebook wrote into the repository"


def write_notebooks() -> None:
    """Regenerate every ``notebooks/NAME.ipynb`` from ``NAME.py``, with empty outputs."""
    for pair in sorted(NOTEBOOK_DIR.glob("*.py")):
        nb = notebook_json(percent_cells(pair.read_text(encoding="utf-8")))
        target = pair.with_suffix(".ipynb")
        target.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print("wrote", target)


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        print("usage: python -m tests.test_notebooks --write", file=sys.stderr)
        sys.exit(2)
    write_notebooks()
