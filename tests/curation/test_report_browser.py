"""The HTML report opened in a real headless Chromium: it renders offline, plots show, nothing errors."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest

from assay.curation.pipeline import run_pipeline
from assay.curation.report import write_reports
from assay.schemas.curation import CurationSpec
from assay.schemas.pii import PiiReport

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-sync"]
INSTALL_HINT = ("Chromium is needed to check the HTML report in a real browser. Install Debian's package: "
                "`apt-get install -y chromium` (or set ASSAY_CHROMIUM to a Chromium binary).")


def chromium_path() -> str:
    import os

    for candidate in (os.environ.get("ASSAY_CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium"):
        if candidate and Path(candidate).is_file():
            return candidate
    pytest.fail(INSTALL_HINT, pytrace=False)


def _write_input(path: Path) -> None:
    records = [{"id": f"r{i}", "messages": [{"role": "system", "content": "Answer briefly."},
                                            {"role": "user", "content": "Why? " * (3 * i)},
                                            {"role": "assistant", "content": "Because. " * (i * i)}]}
               for i in range(1, 9)]
    lines = [json.dumps(r) for r in records] + [
        "not json <script>alert(1)</script>",
        json.dumps({"id": "x1", "messages": [{"role": "user", "content": "no answer"}]}),
        json.dumps({"id": "x2", "messages": [{"role": "robot", "content": "hi"}, {"role": "assistant", "content": "x"}]}),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def report_html(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("browser")
    _write_input(folder / "input.jsonl")
    report = run_pipeline(CurationSpec(steps=["validate"]), folder / "input.jsonl", folder / "out")
    # With a PII section too, rendered by the PII step's renderer when it has one, else generically.
    report = report.model_copy(update={"pii": PiiReport(by_entity={"PERSON": 2}, by_role={"user": 2})})
    write_reports(report, folder / "out")
    return folder / "out" / "report.html"


def test_report_renders_in_headless_chromium_without_errors(report_html: Path, tmp_path: Path) -> None:
    executable = chromium_path()
    from PIL import Image
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    requests: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
                    if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(report_html.as_uri(), wait_until="load")

            assert page.title() == "Assay quality report: input.jsonl"
            plots = page.locator("figure svg")
            assert plots.count() == 2
            for i in range(plots.count()):
                plot = plots.nth(i)
                box = plot.bounding_box()
                assert plot.is_visible() and box is not None and box["width"] > 300 and box["height"] > 100, box
                # Painted, not blank: a plot has bars or lines in several colours.
                pixels = Image.open(io.BytesIO(plot.screenshot())).convert("RGB")
                assert len(pixels.getcolors(maxcolors=1 << 16) or range(1 << 16)) > 10
            assert page.locator("section#pii").is_visible()
            assert page.locator("text=<script>alert(1)</script>").count() >= 1  # shown as text, not run
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
            screenshot = tmp_path / "report.png"
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()

    assert not problems, problems
    assert requests == [report_html.as_uri()], f"the page fetched more than itself: {requests}"
    assert screenshot.stat().st_size > 10_000
    print(f"screenshot: {screenshot}")
