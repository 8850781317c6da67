"""`make plots` offline: ``dvc plots show`` into dvc_plots/index.html, with Vega, Vega-Lite and
vega-embed inlined in the page instead of loaded from a CDN.

DVC's own page fetches the three libraries from cdn.jsdelivr.net, so without a network it stays
blank. vl-convert ships them; ``dvc plots show --html-template`` takes a page that holds them.
dvc.yaml's top-level ``plots:`` say what is drawn (templates in .dvc/plots/).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import vl_convert

# The Vega-Lite of DVC's templates ($schema .../vega-lite/v5.json): the newest 5.x vl-convert ships.
VEGA_LITE_VERSION = "5.21"
OUT = Path("dvc_plots")

# DVC's page calls vegaEmbed('#id', spec) per plot: draw to SVG (sharp, and the marks are in the DOM).
_SNIPPET = """
window.vegaEmbed = (el, spec, opts) => vegaEmbed(el, spec, {renderer: "svg", ...opts});
window.vega = vega;
window.vegaLite = vegaLite;
"""

# {plot_divs}: dvc_render fills it; no {scripts}: that is where DVC puts its CDN <script> tags.
_PAGE = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
{refresh_tag}
<title>nextbuy: DVC plots</title>
<style>
  body { font-family: sans-serif; margin: 16px; }
  .plots { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
</style>
<script>
__BUNDLE__
</script>
</head>
<body>
<h2>nextbuy: DVC plots</h2>
<div class="plots">
{plot_divs}
</div>
</body>
</html>
"""


def javascript_bundle() -> str:
    """vega-embed, Vega-Lite and Vega in one script that defines the globals DVC's page calls."""
    return vl_convert.javascript_bundle(_SNIPPET, vl_version=VEGA_LITE_VERSION)


def page_template() -> str:
    """An HTML template for ``dvc plots show --html-template`` with the libraries inlined."""
    bundle = javascript_bundle()
    if "</script" in bundle.lower():  # would end the inline <script> early
        raise RuntimeError("the vl-convert bundle holds '</script': cannot inline it")
    return _PAGE.replace("__BUNDLE__", bundle)


def show(root: Path = Path("."), out: Path = OUT) -> Path:
    """``dvc plots show`` in the DVC project ``root`` into ``out`` (relative to ``root``); the page."""
    root, out = Path(root).resolve(), Path(out)
    out = out if out.is_absolute() else root / out
    with tempfile.TemporaryDirectory(prefix="nextbuy-plots-") as tmp:
        template = Path(tmp) / "page.html"
        template.write_text(page_template(), encoding="utf-8")
        cmd = [sys.executable, "-m", "dvc", "plots", "show", "--html-template", str(template), "-o", str(out)]
        done = subprocess.run(cmd, cwd=root)  # DVC's warnings (a missing plot file) reach the terminal
    if done.returncode != 0:
        raise RuntimeError(f"dvc plots show failed with exit code {done.returncode}")
    page = out / "index.html"
    if not page.exists():
        raise RuntimeError(f"dvc plots show wrote no {page}")
    if "cdn.jsdelivr.net" in page.read_text(encoding="utf-8"):
        raise RuntimeError(f"{page} still loads scripts from a CDN")
    return page
