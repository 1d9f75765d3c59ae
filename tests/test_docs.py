"""The documentation site builds with `mkdocs build --strict`, and its API pages carry the
docstrings of the code (mkdocstrings): a docstring griffe cannot read, a broken link or a
missing page fails here."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PAGES = [
    "index.html",
    "getting-started/index.html",
    "families/policy-gradient/index.html",
    "families/value-based/index.html",
    "families/planning/index.html",
    "families/sequences/index.html",
    "families/fundamentals/index.html",
    "contract/index.html",
    "lab/index.html",
    "environments/index.html",
    "cli/index.html",
    "benchmarks/index.html",
]

# page -> (heading anchors mkdocstrings writes for documented objects, text of their docstrings)
API = {
    "lab/index.html": (["purejaxrl_lab.runner.run", "purejaxrl_lab.runner.sweep",
                        "purejaxrl_lab.evaluation.evaluate", "purejaxrl_lab.stats.iqm"],
                       ["Interquartile mean"]),
    "environments/index.html": (["envs.registry.make", "envs.wrappers.VecEnv"],
                                ["Builds an environment and its default parameters"]),
    "families/policy-gradient/index.html": (["agents.ppo.make", "agents.ppo.Config",
                                             "agents.common.returns.gae"],
                                            ["Generalised advantage estimation"]),
    "families/sequences/index.html": (["agents.common.sequence_losses.dpo_loss",
                                       "agents.common.sequence_losses.group_advantages"],
                                      ["Group-relative advantages"]),
    "families/fundamentals/index.html": (["agents.ucb.bonus", "agents.tabular.value_iteration"],
                                         []),
    "contract/index.html": (["agents.common.contract.check_agent_module"], []),
}


REQUIRED = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python", "pymdownx")


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    # Fail, never skip: the docs extra is part of `pip install -e ".[dev]"`.
    missing = [package for package in REQUIRED if not _installed(package)]
    assert not missing, f"not installed: {missing}; pip install -e \".[docs]\""
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (
        f"mkdocs build --strict failed (exit {proc.returncode}):\n{proc.stderr}\n{proc.stdout}")
    return out


def test_docs_tooling_is_installed():
    missing = [package for package in REQUIRED if not _installed(package)]
    assert not missing, f"not installed: {missing}; pip install -e \".[docs]\""


def test_every_page_is_built(site):
    missing = [page for page in PAGES if not (site / page).is_file()]
    assert not missing, f"pages not built: {missing}"


@pytest.mark.parametrize("page", sorted(API))
def test_api_sections_render_docstrings(site, page):
    html = (site / page).read_text(encoding="utf-8")
    anchors, texts = API[page]
    for anchor in anchors:
        assert f'id="{anchor}"' in html, f"{page}: no rendered API entry for {anchor}"
    for text in texts:
        assert text in html, f"{page}: the docstring text {text!r} is not rendered"


def test_formulas_are_marked_for_mathjax(site):
    html = (site / "families/policy-gradient/index.html").read_text(encoding="utf-8")
    assert 'class="arithmatex"' in html
    # MathJax's settings are served by the site itself; only the library comes from a CDN,
    # in the reader's browser.
    assert (site / "javascripts/mathjax.js").is_file()
