"""Docs that run: every shell and Python block of README.md and docs/*.md, executed on the small demo.

A page's blocks run in order: shell blocks (```bash, ```sh, ```console, ```shell) with bash in a temporary
working folder where ``demo-output`` is a small demo run (``geosdm demo run --preset small``, built once per
session), ``catalogs``/``benchmarks``/``pipelines`` are the checkout's (``pipelines/demo.yaml`` is the small
preset's, as the demo it describes is), ``.venv`` is this interpreter's
environment (its bin first on PATH) and ``GEOSDM_DEMO_DIR`` points at the demo; Python blocks (```python) in one
fresh namespace per page, so later blocks see earlier names, in the same folder.

A block that needs the internet, is illustrative (names a user's own files or objects), or takes long (``make
demo`` on the default preset, benchmarks) carries a marker with its reason, and is only parsed (``ast.parse``,
``bash -n``): an HTML comment on the line before the fence, ``<!-- docs-test: skip (needs the internet) -->``,
or ``skip`` in the fence's info string (```python skip). Every fence names its language (```text for output and
diagrams), so no command hides in an untagged block.
"""

from __future__ import annotations

import ast
import contextlib
import os
import re
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL = {"bash", "sh", "console", "shell"}
PYTHON = {"python", "py"}
FENCE = re.compile(r"^(?P<indent>\s*)(?P<ticks>`{3,})(?P<info>[^`]*)$")
MARK = re.compile(r"^\s*<!--\s*docs-test:\s*skip\s*(?:\((?P<reason>[^)]*)\))?\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    skip: str | None  # the reason, where the block is only parsed

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """Every fenced block of a Markdown page, with its language and skip marker."""
    lines = page.read_text(encoding="utf-8").splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        ticks, words = m["ticks"], m["info"].split()
        j = i + 1
        while j < len(lines) and not re.match(rf"^\s*{ticks}\s*$", lines[j]):
            j += 1
        indent = len(m["indent"])
        code = "\n".join(line[indent:] if line[:indent].isspace() else line for line in lines[i + 1:j]) + "\n"
        prev = MARK.match(lines[i - 1]) if i else None
        skip = None
        if prev:
            skip = prev["reason"] or ""
        elif "skip" in words[1:]:
            skip = " ".join(w for w in words[1:] if w != "skip")
        out.append(Block(page, i + 1, words[0].lower() if words else "", code, skip))
        i = j + 1
    return out


ALL = [b for p in PAGES for b in blocks(p)]
RUNNABLE = [b for b in ALL if b.lang in SHELL | PYTHON]


def _shell_code(code: str, lang: str) -> str:
    """A ```console block's commands are its ``$ ``-prefixed lines; other shell blocks run as written."""
    if lang != "console":
        return code
    return "\n".join(line[2:] for line in code.splitlines() if line.startswith("$ ")) + "\n"


# --------------------------------------------------------------------------------------------- static checks


def test_every_fence_names_its_language() -> None:
    untagged = [b.where for b in ALL if not b.lang]
    assert not untagged, f"fenced blocks without a language (use ```text for output): {untagged}"


def test_skip_markers_give_a_reason() -> None:
    bare = [b.where for b in ALL if b.skip is not None and not b.skip.strip()]
    assert not bare, f"docs-test skip markers without a reason: {bare}"


@pytest.mark.parametrize("block", RUNNABLE, ids=lambda b: b.where)
def test_block_parses(block: Block) -> None:
    if block.lang in PYTHON:
        ast.parse(block.code, filename=block.where)
    else:
        res = subprocess.run(["bash", "-n"], input=_shell_code(block.code, block.lang), text=True,
                             capture_output=True)
        assert res.returncode == 0, f"{block.where}: {res.stderr}"


# --------------------------------------------------------------------------------------------- running them


@pytest.fixture(scope="session")
def docs_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working folder as a reader has it after ``make demo`` (the small preset): ``demo-output`` and the
    checkout's ``pipelines``, ``catalogs``, ``benchmarks``; ``.venv`` is this interpreter's environment."""
    work = tmp_path_factory.mktemp("docs")
    for name in ("catalogs", "benchmarks", "constraints.txt"):
        (work / name).symlink_to(REPO / name)
    (work / "pipelines").mkdir()  # the checkout's, with the small preset standing in for the default demo
    for f in (REPO / "pipelines").glob("*.yaml"):
        (work / "pipelines" / f.name).symlink_to(REPO / "pipelines" / ("demo-small.yaml" if f.name == "demo.yaml"
                                                                     else f.name))
    (work / ".venv").symlink_to(Path(sys.prefix))
    geosdm = Path(sys.prefix) / "bin" / "geosdm"
    res = subprocess.run([str(geosdm), "demo", "run", "--preset", "small", "--out", "demo-output"], cwd=work,
                         env=_env(work), capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, f"the small demo failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return work


def _env(work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEOSDM_")}
    env["PATH"] = f"{Path(sys.prefix) / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["GEOSDM_DEMO_DIR"] = "demo-output"  # relative, as `make demo` gives it (the folder is the cwd)
    env["MPLBACKEND"] = "Agg"
    return env


@contextlib.contextmanager
def _inside(work: Path):  # type: ignore[no-untyped-def]
    old_cwd, old_env = Path.cwd(), dict(os.environ)
    os.chdir(work)
    os.environ.clear()
    os.environ.update(_env(work))
    try:
        yield
    finally:
        os.chdir(old_cwd)
        os.environ.clear()
        os.environ.update(old_env)


PAGES_WITH_CODE = [p for p in PAGES if any(b.skip is None for b in RUNNABLE if b.page == p)]


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=lambda p: str(p.relative_to(REPO)))
def test_page_runs(page: Path, docs_workdir: Path) -> None:
    """Each runnable block of the page, in order: shell blocks must exit 0, Python blocks must not raise."""
    import matplotlib

    matplotlib.use("Agg")
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for block in (b for b in RUNNABLE if b.page == page and b.skip is None):
        if block.lang in SHELL:
            res = subprocess.run(["bash", "-euo", "pipefail", "-c", _shell_code(block.code, block.lang)],
                                 cwd=docs_workdir, env=_env(docs_workdir), capture_output=True, text=True,
                                 timeout=600)
            assert res.returncode == 0, (f"{block.where} exited {res.returncode}:\n{block.code}\n"
                                         f"stdout:\n{res.stdout[-3000:]}\nstderr:\n{res.stderr[-3000:]}")
        else:
            with _inside(docs_workdir), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    exec(compile(block.code, block.where, "exec"), namespace)  # noqa: S102 - the docs' own code
                except Exception as err:
                    raise AssertionError(f"{block.where} raised {type(err).__name__}: {err}\n{block.code}") from err
    import matplotlib.pyplot as plt

    plt.close("all")
    shutil.rmtree(docs_workdir / "__pycache__", ignore_errors=True)
