"""`make plots` (nextbuy.mlops.plots): dvc.yaml's top-level plots, drawn by a page that needs no
network, in headless Chromium with every host unreachable.

The DVC project is a tmp copy of dvc.yaml and .dvc/plots/ with small CSVs holding the columns the
plots read. Needs Debian's chromium (`apt-get install -y chromium`) for the rendering tests; they
skip without it. Keeps a screenshot under $NEXTBUY_TEST_ARTIFACTS (else the test's tmp dir).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from nextbuy import paths
from tests.conftest import ROOT

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
TEMPLATES = ROOT / ".dvc" / "plots"
# Templates drawing one series per value of a data column; the column and the values of the test data.
GROUPED = {
    "lines_by_bucket": ("bucket", ["0", "1", "2"]),
    "reliability_by_bucket": ("bucket", ["0", "1", "2"]),
    "ccdf_by_direction": ("direction", ["in", "out"]),
    "lines_by_engagement": ("engagement", ["none", "clicked", "carted"]),
    "lines_by_band": ("score_band", ["0", "1", "2"]),
}
BUILT_IN = {"linear", "simple", "smooth", "scatter", "scatter_jitter", "confusion", "confusion_normalized"}
CHROMIUM_TIMEOUT_S = 60
OFFLINE = ["--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9"]  # every fetch fails
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--virtual-time-budget=10000",
    *OFFLINE,
]


def top_level_plots() -> dict[str, dict]:
    """title -> definition, of dvc.yaml's top-level plots."""
    return {title: props for entry in DVC["plots"] for title, props in entry.items()}


def drawn_file(props: dict) -> str:
    (file,) = props["y"]
    return file


def y_fields(props: dict) -> list[str]:
    fields = next(iter(props["y"].values()))
    return [fields] if isinstance(fields, str) else fields


def div_id(title: str) -> str:
    from dvc_render.base import Renderer

    return Renderer.remove_special_chars(title)


# --- dvc.yaml declarations ------------------------------------------------------------------------


def stage_plot_files() -> set[str]:
    """The CSVs the stages write under plots/<stage>/ (stage outs)."""
    return {
        next(iter(o)) if isinstance(o, dict) else o
        for stage in DVC["stages"].values()
        for o in stage.get("outs", [])
        if paths.PLOTS in Path(next(iter(o)) if isinstance(o, dict) else o).parents
    }


def test_top_level_plots_draw_every_stage_plot_file_and_nothing_else():
    assert {drawn_file(props) for props in top_level_plots().values()} == stage_plot_files()


def test_every_template_exists():
    for title, props in top_level_plots().items():
        template = props.get("template", "linear")
        assert template in BUILT_IN or (TEMPLATES / f"{template}.json").is_file(), (title, template)


# --- the page -------------------------------------------------------------------------------------


def write_plot_data(root: Path) -> None:
    """Small CSVs with every column the top-level plots read (positive values: log axes)."""
    columns: dict[str, dict[str, None]] = defaultdict(dict)  # file -> ordered columns
    groups: dict[str, tuple[str, list[str]]] = {}
    xs: set[str] = set()
    for props in top_level_plots().values():
        file = drawn_file(props)
        if props.get("template") in GROUPED:
            groups[file] = GROUPED[props["template"]]
            columns[file][groups[file][0]] = None
        columns[file] |= dict.fromkeys([props["x"], *y_fields(props)])
        xs.add(props["x"])
    for file, names in columns.items():
        group_column, values = groups.get(file, ("", [""]))
        rows = [",".join(names)]
        for g, value in enumerate(values):
            for step in range(1, 6):
                row = {n: step if n in xs else (g + 1) * step * (1 + 0.1 * i) for i, n in enumerate(names)}
                if group_column:
                    row[group_column] = value
                rows.append(",".join(str(row[n]) for n in names))
        (root / file).parent.mkdir(parents=True, exist_ok=True)
        (root / file).write_text("\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A DVC project holding the repo's dvc.yaml and plot templates, and plot data for it."""
    root = tmp_path_factory.mktemp("plots-project")
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=root, check=True)
    shutil.copy(ROOT / "dvc.yaml", root / "dvc.yaml")
    shutil.copytree(TEMPLATES, root / ".dvc" / "plots")
    write_plot_data(root)
    return root


@pytest.fixture(scope="module")
def page(project) -> Path:
    from nextbuy.mlops.plots import show

    return show(project)


def test_the_page_loads_nothing_from_the_network(project, page):
    text = page.read_text()
    assert page == project / "dvc_plots" / "index.html"
    assert re.findall(r"<script[^>]*\ssrc=", text) == []
    assert "vegaEmbed" in text
    assert "cdn.jsdelivr.net" not in text


def test_the_page_holds_exactly_the_top_level_plots(page):
    ids = re.findall(r'<div id = "([^"]+)"', page.read_text())
    assert ids == [div_id(title) for title in top_level_plots()]


class _PlotMarks(HTMLParser):
    """Per plot div: whether it holds an <svg>, and its line/symbol marks that were drawn."""

    def __init__(self, ids: set[str]):
        super().__init__()
        self.ids = ids
        self.svg: dict[str, bool] = dict.fromkeys(ids, False)
        self.lines: dict[str, int] = dict.fromkeys(ids, 0)  # one mark-line group per series
        self.paths: dict[str, int] = dict.fromkeys(ids, 0)  # drawn paths of line and symbol marks
        self._stack: list[tuple[str, str | None, str]] = []  # (tag, plot id, mark class)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        plot = attrs.get("id") if tag == "div" and attrs.get("id") in self.ids else None
        plot = plot or (self._stack[-1][1] if self._stack else None)
        classes = (attrs.get("class") or "").split()
        mark = next((c for c in classes if c in ("mark-line", "mark-symbol")), "")
        mark = mark or (self._stack[-1][2] if self._stack else "")
        if plot and tag == "svg":
            self.svg[plot] = True
        if plot and tag == "g" and "mark-line" in classes:
            self.lines[plot] += 1
        if plot and mark and tag == "path" and len(attrs.get("d") or "") > 8:
            self.paths[plot] += 1
        if tag not in ("path", "rect", "line", "circle", "meta", "input", "br", "img", "link"):
            self._stack.append((tag, plot, mark))

    def handle_endtag(self, tag):
        for i in range(len(self._stack) - 1, -1, -1):
            if self._stack[i][0] == tag:
                del self._stack[i:]
                break


def _chromium(profile: Path, *args: str) -> subprocess.CompletedProcess:
    path = shutil.which("chromium")
    if path is None:
        pytest.skip("chromium not installed (Debian: apt-get install -y chromium); cannot render the plots")
    return subprocess.run(
        [path, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        timeout=CHROMIUM_TIMEOUT_S,
    )


def _rendered(page: Path, profile: Path) -> _PlotMarks:
    dom = _chromium(profile, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr.decode(errors="replace")[-2000:]
    marks = _PlotMarks({div_id(title) for title in top_level_plots()})
    marks.feed(dom.stdout.decode(errors="replace"))
    return marks


def test_offline_every_plot_is_drawn_with_one_series_per_group(page, tmp_path):
    marks = _rendered(page, tmp_path / "profile")
    for title, props in top_level_plots().items():
        plot = div_id(title)
        assert marks.svg[plot], f"{title!r}: no <svg> (the page's JavaScript did not draw it)"
        assert marks.paths[plot] > 0, f"{title!r}: an <svg> without drawn lines or points"
        if props.get("template") in GROUPED:
            series = len(GROUPED[props["template"]][1]) * len(y_fields(props))
            # the reliability diagram adds its diagonal y = x
            assert marks.lines[plot] in (series, series + 1), (title, marks.lines[plot], series)

    artifacts = Path(os.environ.get("NEXTBUY_TEST_ARTIFACTS") or tmp_path)
    artifacts.mkdir(parents=True, exist_ok=True)
    screenshot = artifacts / "dvc_plots.png"
    screenshot.unlink(missing_ok=True)
    shot = _chromium(
        tmp_path / "profile-shot", f"--screenshot={screenshot}", "--window-size=1400,1600", page.as_uri()
    )
    assert shot.returncode == 0, shot.stderr.decode(errors="replace")[-2000:]
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"plots screenshot: {screenshot}")


def test_offline_dvcs_own_page_stays_blank(project, tmp_path):
    """The control: the browser here really is offline, and DVC's default page needs the CDN."""
    out = tmp_path / "default"
    subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "-o", str(out)], cwd=project, check=True)
    assert "cdn.jsdelivr.net" in (out / "index.html").read_text()
    marks = _rendered(out / "index.html", tmp_path / "profile")
    assert not any(marks.svg.values())
