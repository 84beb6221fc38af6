"""The report pages as a sales leader sees them: a live server, headless Chromium, screenshots.

The API runs under uvicorn on a free loopback port with real champions and a prediction store
filled through the API itself (scores at three days of the quarter, then the outcomes the
simulator recorded). Chromium loads each page, dumps the DOM it rendered and takes a
screenshot; the test checks the title, the headline numbers as the page shows them, the charts'
sizes, and that the screenshot is a drawn page rather than a blank one.
"""

from __future__ import annotations

import html as htmllib
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import uvicorn

from features import synthetic
from features.io import read_export
from models import CLOSE_MODEL_NAME
from models.registry import load_champion
from serving.app import create_app
from serving.forecasting import forecast_export
from serving.reports.svg import money, odds
from tests.serving.conftest import ScoringSetup, settings_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: the simulated company's fiscal year starts in February: Q2 runs from May to July
PERIOD, AS_OF, COMPARE_TO, QUOTA = "2026-Q2", "2026-07-01", "2026-06-24", 1_500_000.0
SCORED_ON = ("2026-05-04", "2026-06-01", "2026-07-01")
WINDOW = (1280, 1800)


@pytest.fixture(scope="module")
def chromium() -> str:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (.ci/run installs Debian's chromium)")
    return CHROMIUM


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def live_server(
    chromium: str,
    scoring_setup: ScoringSetup,
    small_simulation: synthetic.Simulation,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, Any]]:
    """The API on a loopback port, its store holding scores of three days and their outcomes."""
    root = tmp_path_factory.mktemp("pages-live")
    settings = settings_for(scoring_setup.registry_uri, root, data_dir=scoring_setup.data_dir)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    try:
        scored: dict[str, float] = {}
        for day in SCORED_ON:
            answer = _call(f"{base}/score/opportunities", {"as_of": day})
            scored.update({d["opportunity_id"]: d["p_win"] for d in answer["deals"]})
        opps = small_simulation.export.opportunities
        assert opps is not None
        done = opps.loc[
            opps["opportunity_id"].astype("string").isin(list(scored))
            & opps["status"].astype("string").isin(["won", "lost"])
        ]
        outcomes = [
            {
                "opportunity_id": str(r.opportunity_id),
                "status": str(r.status),
                "closed_at": pd.Timestamp(r.closed_at).date().isoformat(),
                "amount": float(r.amount),
            }
            for r in done.itertuples(index=False)
        ]
        _call(f"{base}/outcomes", {"opportunities": outcomes})
        calibration = _call(f"{base}/calibration?model=close_probability")
        yield base, {"settings": settings, "calibration": calibration}
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _call(url: str, body: Any = None) -> Any:
    """GET (or POST ``body`` as JSON to) the live server; the JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as answer:  # noqa: S310 — loopback only
        assert answer.status == 200
        return json.loads(answer.read())


def _chromium(binary: str, url: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        *args,
        url,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def render(binary: str, url: str, folder: Path, name: str) -> tuple[str, np.ndarray]:
    """The DOM Chromium rendered for ``url`` and its screenshot as an RGB(A) array."""
    dom = _chromium(binary, url, folder / f"{name}-profile-dom", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    png = folder / f"{name}.png"
    shot = _chromium(binary, url, folder / f"{name}-profile-shot", f"--screenshot={png}")
    assert shot.returncode == 0 and png.is_file(), shot.stderr[-2000:]
    keep = os.environ.get("PIPECAST_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(png, Path(keep) / png.name)
        (Path(keep) / f"{name}.html").write_text(dom.stdout, encoding="utf-8")
    import matplotlib.image as mpimg

    return dom.stdout, np.asarray(mpimg.imread(png))


def cards(dom: str) -> dict[str, str]:
    found = re.findall(
        r'<div class="label">(.*?)</div>\s*<div class="value">(.*?)</div>', dom, flags=re.S
    )
    return {htmllib.unescape(k).strip(): htmllib.unescape(v).strip() for k, v in found}


def charts(dom: str) -> list[tuple[str, int, int]]:
    """(class, width, height) of every chart in the DOM."""
    return [
        (kind, int(w), int(h))
        for kind, w, h in re.findall(
            r'<svg[^>]*class="chart (\w+)" width="(\d+)" height="(\d+)"', dom
        )
    ]


def assert_drawn(image: np.ndarray) -> None:
    """A page, not a blank or an error screen: the window's size, many colours, much ink."""
    assert image.shape[:2] == (WINDOW[1], WINDOW[0])
    rgb = np.round(image[..., :3] * 255).astype(np.uint8).reshape(-1, 3)
    colours = np.unique(rgb, axis=0)
    assert len(colours) > 200, f"only {len(colours)} colours: a blank page?"
    # the page background is a light grey: ink is anything clearly darker than it
    inked = (rgb.astype(int).sum(axis=1) < 600).mean()
    assert inked > 0.02, f"only {inked:.1%} of the screenshot is drawn on"
    # the charts' colours (blue, green, orange) against the greys of text and tables
    coloured = (rgb.max(axis=1).astype(int) - rgb.min(axis=1) > 40).mean()
    assert coloured > 0.001, f"only {coloured:.2%} of the screenshot in colour: no chart?"


def test_forecast_page_in_a_browser(
    live_server: tuple[str, Any], chromium: str, tmp_path: Path
) -> None:
    base, state = live_server
    url = (
        f"{base}/reports/forecast?period={PERIOD}&as_of={AS_OF}&quota={QUOTA:.0f}"
        f"&compare_to={COMPARE_TO}"
    )
    dom, image = render(chromium, url, tmp_path, "forecast")

    # the same forecast made directly: the page must show its numbers
    settings = state["settings"]
    model, info = load_champion(settings, CLOSE_MODEL_NAME)
    expected = forecast_export(
        read_export(settings.data_dir),
        model,
        model_version=str(info["version"]),
        period=PERIOD,
        as_of=AS_OF,
        quota=QUOTA,
        group_by="owner_id",
        compare_to=COMPARE_TO,
    ).response
    assert f"<title>Forecast {PERIOD} — as of {AS_OF}</title>" in dom
    total = expected["total"]
    shown = cards(dom)
    assert shown["Expected bookings"] == money(total["expected"])
    assert shown["Range P10–P90"] == f"{money(total['p10'])}–{money(total['p90'])}"
    assert shown["Won to date"] == money(expected["won_to_date"])
    assert shown["Quota attainment odds"] == odds(expected["prob_attain_quota"])
    assert "Roll-up by owner" in dom and "The deals that carry the period" in dom
    assert f"What changed since {COMPARE_TO}" in dom
    top = max(expected["deals"], key=lambda d: d["expected_value"])
    assert top["opportunity_id"] in dom.split("The deals that carry the period")[1]
    drawn = charts(dom)
    assert ("range", 720, 150) in drawn
    assert dom.count('class="spark"') == len(expected["groups"]) > 1
    assert_drawn(image)


def test_calibration_page_in_a_browser(
    live_server: tuple[str, Any], chromium: str, tmp_path: Path
) -> None:
    base, state = live_server
    dom, image = render(chromium, f"{base}/reports/calibration", tmp_path, "calibration")
    report = state["calibration"]
    assert "<title>Calibration — are the probabilities right?</title>" in dom
    close = dom.split('id="close_probability"')[1].split('id="sqo_likelihood"')[0]
    shown = cards(close)
    assert shown["deals scored"] == f"{report['n_predictions']:,}"
    assert report["n_with_outcome"] > 20
    assert shown["Brier score"] == f"{report['overall']['brier']:.3f}"
    assert shown["ECE"] == f"{100 * report['overall']['ece']:.1f}%"
    assert shown["AUC"] == f"{report['overall']['auc']:.2f}"
    # the reliability diagram carries every filled bin's count
    for row in report["reliability"]:
        if row["count"]:
            assert f">{row['count']:,}</text>" in close
    assert sum(r["count"] for r in report["reliability"]) == report["n_with_outcome"]
    # three scoring days: three weeks of the quarter in the table
    weeks = close.split("By week of the quarter")[1]
    assert len(re.findall(r"<tr><td>\d+</td>", weeks)) == len(SCORED_ON)
    (kind, width, height), *_ = charts(close)
    assert kind == "reliability" and width >= 400 and height >= 400
    assert_drawn(image)


def test_pages_ask_a_browser_for_the_key(
    scoring_setup: ScoringSetup, chromium: str, tmp_path: Path
) -> None:
    """With API keys set, a page opened without the key is refused (the browser's sign-in
    prompt); with the key as the password of the address it renders."""
    settings = settings_for(
        scoring_setup.registry_uri, tmp_path, data_dir=scoring_setup.data_dir, api_keys="k-7"
    )
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the test server did not start"
        time.sleep(0.05)
    try:
        refused = _chromium(
            chromium, f"http://127.0.0.1:{port}/reports/calibration", tmp_path / "p1", "--dump-dom"
        )
        assert "Calibration — are the probabilities right?" not in refused.stdout
        # headless Chromium cannot show the sign-in prompt the challenge asks for: it says so
        assert "ERR_INVALID_AUTH_CREDENTIALS" in refused.stderr, refused.stderr[-500:]
        dom, image = render(
            chromium, f"http://reader:k-7@127.0.0.1:{port}/reports/calibration", tmp_path, "keyed"
        )
        assert "<title>Calibration — are the probabilities right?</title>" in dom
        assert image.shape[:2] == (WINDOW[1], WINDOW[0])
    finally:
        server.should_exit = True
        thread.join(timeout=30)
