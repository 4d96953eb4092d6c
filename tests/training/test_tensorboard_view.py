"""What a user sees: a real sweep, a real TensorBoard server on 127.0.0.1 and a real headless browser.

The browser is Debian's chromium, driven over the DevTools protocol through a pipe (``--remote-debugging-pipe``:
no extra package). TensorBoard renders its pages inside shadow DOM, so the page's text is read by walking
the shadow roots. Set ``STABILITY_SCREENSHOTS=<folder>`` to keep the screenshots. All slow; the browser
tests skip when chromium is missing.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sweep_helpers import TINY, run_sweep, summaries, write_grid

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium (apt-get install chromium)")

# Every text node of the page, shadow roots included, in document order (style and script left out).
PAGE_TEXT = """(() => { const out = [];
  const walk = (node) => {
    if (node.nodeType === 3) { const t = node.textContent.trim(); if (t) out.push(t); return; }
    if (node.nodeName === 'STYLE' || node.nodeName === 'SCRIPT') return;
    if (node.shadowRoot) walk(node.shadowRoot);
    for (const child of node.childNodes) walk(child);
  };
  walk(document.body); return out; })()"""


class Browser:
    """Headless chromium driven over the DevTools protocol on file descriptors 3 (in) and 4 (out)."""

    def __init__(self, width: int = 1600, height: int = 1000) -> None:
        self.profile = tempfile.mkdtemp(prefix="stability-chromium-")
        to_browser, self._to_browser = os.pipe()
        self._from_browser, from_browser = os.pipe()

        def wire() -> None:  # in the child, before exec: the protocol's pipes on fds 3 and 4
            os.dup2(to_browser, 3)
            os.dup2(from_browser, 4)

        self.process = subprocess.Popen(
            [CHROMIUM, "--headless=new", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
             "--enable-unsafe-swiftshader", "--hide-scrollbars", "--no-first-run", f"--user-data-dir={self.profile}",
             f"--window-size={width},{height}", "about:blank"],
            pass_fds=(3, 4), preexec_fn=wire, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser)
        os.close(from_browser)
        self._buffer, self._id = b"", 0
        page = next(t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]
        self.call("Emulation.setDeviceMetricsOverride", page_call=True, width=width, height=height,
                  deviceScaleFactor=1, mobile=False)

    def call(self, method: str, page_call: bool = False, **params: Any) -> dict[str, Any]:
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if page_call:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed the DevTools pipe")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def open(self, url: str) -> None:
        self.call("Page.navigate", page_call=True, url=url)

    def text(self) -> list[str]:
        result = self.call("Runtime.evaluate", page_call=True, expression=PAGE_TEXT, returnByValue=True)
        return result["result"].get("value") or []

    def wait_for(self, ready: Callable[[list[str]], bool], timeout: float = 60.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            text = self.text()
            if ready(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"page not ready after {timeout:.0f} s; it shows: {text[:80]}")
            time.sleep(0.5)

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", page_call=True, format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.call("Browser.close")
            self.process.wait(timeout=20)
        except (RuntimeError, OSError, subprocess.TimeoutExpired):
            self.process.kill()
        os.close(self._to_browser)
        os.close(self._from_browser)
        shutil.rmtree(self.profile, ignore_errors=True)


# -- fixtures: a sweep with more varied keys than the table shows, a diverged run, TensorBoard on it ---------------
RUNS = 10  # (2 norms + 3 included cells) x 2 seeds


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four toggles, lr and seed vary: one more than TensorBoard's HParams table shows without a click.

    Most runs of two steps stay at chance: they are recorded as collapsed, which the views must mark too.
    """
    folder = tmp_path_factory.mktemp("view")
    grid = write_grid(folder, "view", {
        "overrides": TINY | {"telemetry.every_n_steps": 1},
        "axes": {"model.vit.norm": ["layernorm", "centernorm"]},
        "include": [{"model.lr": 1000.0, "model.warmup": False},  # the loss explodes: a diverged run
                    {"model.vit.stem": "conv"}, {"model.vit.attention": "cosine"}],
        "seeds": [0, 1],
    })
    result = run_sweep([str(grid)], folder / "out")
    assert result.rc == 0, result.stdout + result.stderr
    assert len(summaries(result.out)) == RUNS
    return result.out


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _post(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def tensorboard(sweep: Path) -> Iterator[str]:
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(sweep), "--host",
                               "127.0.0.1", "--port", str(port), "--reload_interval", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:  # up, and done reading the sweep (the experiment and every run's last metrics)
            try:
                groups = _post(f"{url}/data/plugin/hparams/session_groups", SESSION_QUERY)["sessionGroups"]
                if len(groups) == RUNS and all(g["metricValues"] for g in groups):
                    break
            except OSError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "TensorBoard did not come up"
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=20)


SESSION_QUERY = {"experimentName": "", "startIndex": 0, "sliceSize": 100, "colParams": [],
                 "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]}


@pytest.fixture
def browser() -> Iterator[Browser]:
    session = Browser()
    try:
        yield session
    finally:
        session.close()


def keep(browser: Browser, name: str, tmp_path: Path) -> Path:
    """Screenshot into tmp_path (and STABILITY_SCREENSHOTS if set); check it is a real picture."""
    time.sleep(5)  # the charts draw after their text: let them
    path = browser.screenshot(tmp_path / f"{name}.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 20_000
    if os.environ.get("STABILITY_SCREENSHOTS"):
        target = Path(os.environ["STABILITY_SCREENSHOTS"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target / path.name)
    return path


# -- what the server says ------------------------------------------------------------------------------------------
def test_the_server_takes_the_sweep_experiment_from_the_root(tensorboard: str, sweep: Path) -> None:
    experiment = _post(f"{tensorboard}/data/plugin/hparams/experiment", {"experimentName": ""})
    # in the server's own order: the shown columns (lr, seed and three of the four varied toggles: one run
    # apart from the baseline each, ties in TOGGLES order), then warmup, varied but a tick away
    assert [h["displayName"] for h in experiment["hparamInfos"]] == ["attention", "norm", "stem", "lr", "seed",
                                                                    "warmup"]
    assert [h.get("differs", False) for h in experiment["hparamInfos"]] == [True] * 5 + [False]
    assert [m["displayName"] for m in experiment["metricInfos"]][:5] == [
        "diverged", "collapsed", "steps survived", "test acc", "best val acc"]
    groups = _post(f"{tensorboard}/data/plugin/hparams/session_groups", SESSION_QUERY)["sessionGroups"]
    records = summaries(sweep)
    flags = {}
    for group in groups:
        values = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
        flags[group["name"]] = (values["hp/diverged"], values["hp/collapsed"])
        # the parallel-coordinates view draws a run only when it has every metric: every run has them all
        assert set(values) == {m["name"]["tag"] for m in experiment["metricInfos"]}, group["name"]
    assert flags == {name: (float(r["status"] == "diverged"), float(r["status"] == "collapsed"))
                     for name, r in records.items()}
    assert {n for n, (d, _) in flags.items() if d} == {n for n in records if n.startswith("warmup=off,lr=1000,")}


def test_the_server_merges_the_runs_layouts(tensorboard: str) -> None:
    layout = _get(f"{tensorboard}/data/plugin/custom_scalars/layout")
    assert [c["title"] for c in layout["category"]] == [
        "loss and failures", "max attention logit per layer (attn/max_logit)",
        "gradient norm per block, before clipping (grad_norm)"]
    charts = layout["category"][1]["chart"]
    assert [c["title"] for c in charts] == ["layer 0", "layer 1"]  # once, though every run wrote it
    markers = layout["category"][0]["chart"][1]
    assert markers["multiline"]["tag"] == ["^Stability/diverged$", "^Stability/collapsed$"]


# -- what the browser shows ----------------------------------------------------------------------------------------
# The HParams filter panel's check boxes, in page order: (label, ticked). The panel is TensorBoard's Polymer
# query pane; each hyperparameter and metric has a paper-checkbox whose text is its display name.
CHECKBOXES = """(() => { const out = [];
  const walk = (node) => {
    if (node.nodeName === 'PAPER-CHECKBOX') out.push([node.textContent.trim(), !!node.checked]);
    if (node.shadowRoot) walk(node.shadowRoot);
    for (const child of node.children || []) walk(child);
  };
  walk(document.body); return out; })()"""


@needs_chromium
def test_hparams_table_opens_on_lr_seed_and_the_failures(tensorboard: str, browser: Browser,
                                                         tmp_path: Path) -> None:
    browser.open(f"{tensorboard}/#hparams")
    text = browser.wait_for(lambda t: "Trial ID" in t and any(s.startswith("warmup=off,lr=1000,") for s in t))
    header = text[text.index("Trial ID"):text.index("Trial ID") + 12]
    assert header == ["Trial ID", "Show Metrics", "attention", "norm", "stem", "lr", "seed", "diverged",
                      "collapsed", "steps survived", "test acc", "best val acc"]
    boxes = dict(browser.call("Runtime.evaluate", page_call=True, expression=CHECKBOXES,
                              returnByValue=True)["result"]["value"])
    assert {name: boxes.get(name) for name in ("lr", "seed", "stem", "warmup", "collapsed")} == {
        "lr": True, "seed": True, "stem": True, "warmup": False, "collapsed": True}
    keep(browser, "hparams", tmp_path)


@needs_chromium
def test_time_series_opens_on_the_stability_group(tensorboard: str, browser: Browser, tmp_path: Path) -> None:
    browser.open(f"{tensorboard}/#timeseries")

    def cards(text: list[str]) -> list[str]:  # a card's title is drawn as its group, then the rest of the tag
        return [group + rest for group, rest in zip(text, text[1:]) if group == "Stability" and rest[:1] == "/"]

    text = browser.wait_for(lambda t: len(cards(t)) >= 5)
    groups = [t for t in text if t in ("Stability", "attn", "grad_norm", "hp", "train", "val")]
    assert groups[0] == "Stability"
    assert cards(text)[:5] == ["Stability/collapsed", "Stability/diverged", "Stability/grad_norm",
                               "Stability/loss", "Stability/max_attn_logit"]
    keep(browser, "timeseries", tmp_path)


@needs_chromium
def test_custom_scalars_open_on_loss_and_failures(tensorboard: str, browser: Browser, sweep: Path,
                                                  tmp_path: Path) -> None:
    failed = sum(r["status"] in ("diverged", "collapsed") for r in summaries(sweep).values())
    assert failed > 1  # the diverged run and at least one collapsed one
    browser.open(f"{tensorboard}/#custom_scalars")
    # the training-loss chart finds every run's series, the failure-marker chart one per failed run
    text = browser.wait_for(lambda t: "loss and failures" in t and f"Matches ({RUNS})" in t
                            and f"Matches ({failed})" in t)
    assert text.index("loss and failures") < text.index("max attention logit per layer (attn/max_logit)")
    assert "training loss (train/loss)" in text
    keep(browser, "custom_scalars", tmp_path)


# The HParams dashboard's parallel-coordinates tab (a paper-tab in shadow DOM) and the lines it draws: d3 draws one
# path per session group in the plot's "foreground" group, and only for the groups that have a value for every
# metric shown, so a run missing one is left out of the picture without a word.
OPEN_PARALLEL_COORDINATES = """(() => { let tab = null;
  const walk = (node) => {
    if (tab) return;
    if (node.nodeName === 'PAPER-TAB' && /parallel coordinates/i.test(node.textContent)) { tab = node; return; }
    if (node.shadowRoot) walk(node.shadowRoot);
    for (const child of node.children || []) walk(child);
  };
  walk(document.body); if (tab) tab.click(); return !!tab; })()"""
DRAWN_SESSIONS = """(() => { let n = 0;
  const walk = (node, inPlot) => {
    inPlot = inPlot || node.nodeName === 'TF-HPARAMS-PARALLEL-COORDS-PLOT';
    if (inPlot && node.nodeName === 'path' && node.parentNode.classList.contains('foreground')
        && getComputedStyle(node).display !== 'none' && node.getAttribute('d')) n += 1;
    if (node.shadowRoot) walk(node.shadowRoot, inPlot);
    for (const child of node.children || []) walk(child, inPlot);
  };
  walk(document.body, false); return n; })()"""


@needs_chromium
def test_hparams_parallel_coordinates_draw_every_run(tensorboard: str, browser: Browser, tmp_path: Path) -> None:
    browser.open(f"{tensorboard}/#hparams")
    browser.wait_for(lambda t: "Trial ID" in t and any(s.startswith("warmup=off,lr=1000,") for s in t))

    def evaluate(expression: str) -> Any:
        return browser.call("Runtime.evaluate", page_call=True, expression=expression,
                            returnByValue=True)["result"]["value"]

    assert evaluate(OPEN_PARALLEL_COORDINATES), "no parallel-coordinates tab"
    deadline, drawn = time.monotonic() + 30, 0
    while drawn < RUNS and time.monotonic() < deadline:  # the plot draws once the tab's data arrived
        time.sleep(0.5)
        drawn = evaluate(DRAWN_SESSIONS)
    keep(browser, "hparams_parallel_coordinates", tmp_path)  # kept before the verdict: a failure shows why
    assert drawn == RUNS, f"the parallel-coordinates view draws {drawn} of the {RUNS} runs"
