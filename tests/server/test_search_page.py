"""The search page at the server's root, in a real headless Chromium driven by Selenium.

The server is the package's real ``conan-rag serve --collection`` process (``conftest.py``).
The browser is Debian's ``chromium`` with ``chromium-driver`` (``make test`` installs both with
apt when they are missing); run this file alone with
``.venv/bin/python -m pytest tests/server/test_search_page.py``. Every wait is on the page's
state (the collection line, the status line), with a generous ceiling for a busy machine.
"""

from __future__ import annotations

import math
import re
import shutil
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.wait import WebDriverWait

from tests.server.conftest import NAME, QUERIES

CEILING_S = 120  # a hang guard: each wait ends as soon as the page shows the state


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    """Headless Chromium through chromedriver (both from Debian; no driver is downloaded)."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.fail(
            "The browser test needs Debian's chromium and chromium-driver: run `make test` "
            "(it installs them) or `apt-get install chromium chromium-driver`."
        )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    session = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    try:
        yield session
    finally:
        session.quit()


def _wait_for(browser: WebDriver, element_id: str, text: str) -> str:
    """The element's text once it contains ``text``."""
    wait = WebDriverWait(browser, CEILING_S)
    wait.until(lambda b: text in b.find_element(By.ID, element_id).text)
    return str(browser.find_element(By.ID, element_id).text)


def _hits(browser: WebDriver, section: str) -> list[dict[str, str]]:
    """The hits listed under ``#kept`` or ``#cut``: id, scores line and source line."""
    return [
        {
            "id": str(item.get_attribute("data-id")),
            "scores": item.find_element(By.CLASS_NAME, "scores").text,
            "source": item.find_element(By.CLASS_NAME, "source").text,
        }
        for item in browser.find_elements(By.CSS_SELECTOR, f"#{section} .hit")
    ]


def test_the_page_is_served_without_the_key_and_holds_no_data(served_url: str) -> None:
    page = httpx.get(f"{served_url}/", timeout=60)
    script = httpx.get(f"{served_url}/search.js", timeout=60)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert '<script src="search.js">' in page.text
    # works offline: nothing loaded from elsewhere (the SVG namespace is a name, not a fetch)
    assert re.search(r"(src|href)=[\"']?(https?:)?//", page.text) is None
    assert re.findall(r"https?://[^\"']+", script.text) == ["http://www.w3.org/2000/svg"]
    assert NAME not in page.text  # the collection is fetched by the script, behind the key


def test_typing_a_query_shows_the_top_hit_and_the_threshold_cuts_it(
    served_url: str, collection: dict[str, Any], browser: WebDriver
) -> None:
    want = collection["want"]["hybrid"][0]  # QUERIES[0], hybrid, k=3, float32 on both sides
    browser.get(f"{served_url}/")
    _wait_for(browser, "collection", f"Collection {NAME}: {collection['chunks']} chunks")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#sweep polyline")) == 3  # the sweep
    browser.find_element(By.ID, "query").send_keys(QUERIES[0])
    Select(browser.find_element(By.ID, "mode")).select_by_value("hybrid")
    k = browser.find_element(By.ID, "k")
    k.clear()
    k.send_keys("3")
    browser.find_element(By.ID, "search").click()
    _wait_for(browser, "status", "3 hits (hybrid, k=3)")
    kept = _hits(browser, "kept")
    assert [h["id"] for h in kept] == [h.id for h in want] and _hits(browser, "cut") == []
    assert want[0].metadata["source"] in kept[0]["source"]
    assert kept[0]["scores"].startswith(f"cosine {want[0].score:.4f}")
    # Move the slider (arrow keys, 0.01 a step from "off" at -1) just above the top cosine.
    steps = math.floor((want[0].score + 1) / 0.01) + 1
    browser.find_element(By.ID, "threshold").send_keys(*[Keys.ARROW_RIGHT] * steps)
    value = float(str(browser.find_element(By.ID, "threshold").get_attribute("value")))
    assert want[0].score < value <= want[0].score + 0.0101
    _wait_for(browser, "threshold-value", f"{value:.2f}")
    cut = _hits(browser, "cut")
    assert want[0].id not in [h["id"] for h in _hits(browser, "kept")]
    assert want[0].id in [h["id"] for h in cut]
    assert browser.find_elements(By.ID, "sweep-threshold")  # the sweep marks the threshold
    # The URL carries the search and the threshold: loading it shows the same cut.
    assert f"threshold={value:g}" in browser.current_url and "q=Which" in browser.current_url
    browser.get(browser.current_url)
    _wait_for(browser, "status", "3 hits (hybrid, k=3)")
    assert [h["id"] for h in _hits(browser, "cut")] == [h["id"] for h in cut]
