"""The static explorer in a real headless browser (optional; skipped without chromium).

Not collected by a plain ``pytest`` run (the name does not start with ``test_``); run it with
``pytest tests/browser_check_explorer.py``. Uses tiny untrained models, no MNIST. It loads a
page holding the static explorer, moves both sliders from a script (value + ``input`` event)
and checks, through ``--dump-dom``, that the label and the image follow the slider.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from test_explorer import tiny_models

from cvae_helpers.explorer import static_explorer

EID = "cvae-explorer"
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]

PROBE = f"""
<script>
(function() {{
  const img = document.getElementById("{EID}-img");
  const q = document.getElementById("{EID}-q"), d = document.getElementById("{EID}-d");
  const out = [];
  function record(tag) {{
    out.push({{tag: tag, q: document.getElementById("{EID}-qv").textContent,
              d: document.getElementById("{EID}-dv").textContent, src: img.src}});
  }}
  record("0,0");
  d.value = 2; d.dispatchEvent(new Event("input")); record("0,2");
  q.value = 1; q.dispatchEvent(new Event("input")); record("1,2");
  const pre = document.createElement("pre");
  pre.id = "probe-result";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
}})();
</script>"""


def browser() -> str:
    for name in BROWSERS:
        if shutil.which(name):
            return name
    pytest.skip("no chromium on this machine (apt-get install chromium)")


def test_static_sliders_swap_frames_in_a_browser(tmp_path: Path):
    exe = browser()
    models_by_q = {q: tiny_models(q) for q in (1, 2)}
    digits = [1, 5, 7]
    block = static_explorer(models_by_q, digits, num_samples=2, seed=0)
    frames = json.loads(re.search(r"const frames = (\{.*?\});", block, re.S).group(1))
    page = tmp_path / "check.html"
    page.write_text("<!doctype html><html><head><meta charset='utf-8'></head><body>"
                    f"{block}{PROBE}</body></html>")
    with tempfile.TemporaryDirectory() as profile:
        run = subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", "--dump-dom",
                              page.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="probe-result">(.*?)</pre>', run.stdout, re.S)
    assert found, f"the probe did not run:\n{run.stderr[-2000:]}"
    shown = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    # slider positions (quadrant position, digit position) -> what must be on screen
    for row, (q, position) in zip(shown, [(1, 0), (1, 2), (2, 2)], strict=True):
        assert row["q"] == str(q) and row["d"] == f"#{digits[position]}"
        assert row["src"] == frames[f"{q}-{position}"]
    assert len({row["src"] for row in shown}) == 3
