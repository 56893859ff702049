"""The web page in a real headless Chromium (Debian's ``chromium`` and ``chromium-driver``,
driven by Selenium) against a real server: sign in, list, a dataset, filters, the preview
and "load more", a CSV download equal to the same export by curl, cancel and failure
mid-export, and a cell holding HTML shown as text.

``ROWSTREAM_SCREENSHOTS=docs`` also writes the list and a dataset page into ``docs/``.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

from app import ui
from tests.support import Server, execute, raw_request, read_all, run, serving

XSS = "<img src=x onerror=alert(1)>"
SCHEMA = f"""
CREATE TABLE notes (id int PRIMARY KEY, title text NOT NULL, score int NOT NULL, day date);
INSERT INTO notes SELECT i, 'note ' || i, i % 100, date '2024-01-01' + i
FROM generate_series(1, 250) AS i;
UPDATE notes SET title = '{XSS}' WHERE id = 3;
UPDATE notes SET title = '=2+3' WHERE id = 96; -- a formula, to a spreadsheet
-- flights-shaped: 20 columns, a year, ids, a long text, a timestamp
CREATE TABLE flights (id int PRIMARY KEY, year int, month int, day int, dep_time int,
  sched_dep_time int, dep_delay int, arr_time int, sched_arr_time int, arr_delay int,
  carrier text, flight int, tailnum text, origin text, dest text, air_time int,
  distance int, hour int, minute int, time_hour timestamptz, remark text);
INSERT INTO flights SELECT i, 2013, 1 + i % 12, 1 + i % 28, 517 + i, 515, 2, 830, 819, 11,
  'UA', 1545, 'N14228', 'EWR', 'IAH', 227, 1400, 5, 15,
  timestamptz '2013-01-01 05:00+00' + i * interval '1 hour',
  repeat('a long remark that goes on ', 12) || i
FROM generate_series(1, 300) AS i;
ANALYZE flights;
ANALYZE notes;
"""
DATASETS = """
[datasets.notes]
table = "notes"
description = "Notes, one of them holding HTML"

[datasets.flights]
table = "flights"

[datasets.slow]
query = '''SELECT i AS id, md5(i::text) AS v FROM generate_series(1, 2000000) AS i
  WHERE pg_sleep(0.0005) IS NOT NULL'''
description = "A saved query that takes its time (about a row every half millisecond)"
"""
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def ui_url(fresh_database: Callable[..., str]) -> str:
    url: str = fresh_database("rowstream_ui", SCHEMA)
    return url


@pytest.fixture(scope="module")
def server(ui_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(ui_url, DATASETS, tmp_path_factory.mktemp("ui")) as s:
        yield s


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(downloads: Path) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    options.add_argument("--window-size=1280,1000")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # CSP reports show there
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def wait(browser: WebDriver, condition: Callable[[WebDriver], object], seconds: float = 20) -> None:
    # the page re-renders as rows arrive: an element read a moment ago may be gone
    WebDriverWait(
        browser, seconds, poll_frequency=0.05, ignored_exceptions=(StaleElementReferenceException,)
    ).until(condition)


def sign_in(browser: WebDriver, server: Server) -> None:
    browser.get(server.base_url + "/")
    if browser.find_element(By.ID, "signin").is_displayed():
        browser.find_element(By.ID, "token").send_keys(server.token(ttl=3600))
        browser.find_element(By.CSS_SELECTOR, "#signin-form button").click()
    wait(browser, lambda b: b.find_element(By.ID, "list").is_displayed())


def open_dataset(browser: WebDriver, name: str) -> None:
    browser.find_element(By.LINK_TEXT, name).click()
    wait(browser, lambda b: b.find_element(By.ID, "dataset").is_displayed())


def preview_ids(browser: WebDriver) -> list[int]:
    cells = browser.find_elements(By.CSS_SELECTOR, "#preview tbody tr td:first-child")
    return [int(c.text) for c in cells]


def export_status(browser: WebDriver) -> WebElement:
    return browser.find_element(By.ID, "export-status")


def screenshot(browser: WebDriver, name: str) -> None:
    target = os.environ.get("ROWSTREAM_SCREENSHOTS")
    if target:
        browser.save_screenshot(str(Path(target) / name))


def test_the_page_lists_shows_filters_pages_and_downloads(
    browser: WebDriver, server: Server, downloads: Path
) -> None:
    sign_in(browser, server)
    names = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#datasets tbody a")]
    assert names == ["notes", "flights", "slow"]
    assert "250" in browser.find_element(By.ID, "datasets").text  # the estimate
    screenshot(browser, "ui-datasets.png")

    open_dataset(browser, "notes")
    wait(browser, lambda b: len(preview_ids(b)) == 100)
    assert browser.current_url.endswith("/ui/datasets/notes")
    assert preview_ids(browser) == list(range(1, 101))
    # the HTML in a cell is text: no image element, no alert
    cell = browser.find_element(By.XPATH, "//table[@id='preview']//td[text()='" + XSS + "']")
    assert cell.text == XSS
    assert not browser.find_elements(By.CSS_SELECTOR, "#preview img")
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018
    # load more: keyset pages of 100, then the last 50, then no more
    browser.find_element(By.ID, "more").click()
    wait(browser, lambda b: len(preview_ids(b)) == 200)
    browser.find_element(By.ID, "more").click()
    wait(browser, lambda b: len(preview_ids(b)) == 250)
    assert preview_ids(browser) == list(range(1, 251))
    assert not browser.find_element(By.ID, "more").is_displayed()

    # a filter (score >= 95) and two columns
    browser.find_element(By.ID, "add-filter").click()
    row = browser.find_element(By.CSS_SELECTOR, "#filters .filter")
    Select(row.find_element(By.CSS_SELECTOR, ".column")).select_by_value("score")
    Select(row.find_element(By.CSS_SELECTOR, ".operator")).select_by_value("gte")
    row.find_element(By.CSS_SELECTOR, ".value").send_keys("95")
    for box in browser.find_elements(By.CSS_SELECTOR, "#fields input"):
        if box.get_attribute("value") == "day":
            box.click()
    browser.find_element(By.ID, "apply").click()
    expected = [i for i in range(1, 251) if i % 100 >= 95]
    wait(browser, lambda b: preview_ids(b) == expected)
    headers = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#preview thead th")]
    assert headers == ["id", "title", "score"]
    screenshot(browser, "ui-dataset.png")
    curl = browser.find_element(By.ID, "code-curl").text
    assert "score__gte=95" in curl and "fields=id%2Ctitle%2Cscore" in curl
    assert server.token() not in curl
    assert 'client.to_pandas("notes"' in browser.find_element(By.ID, "code-python").text

    # download CSV: the saved file is the same export, byte for byte, as curl gets it
    # with csv_safe=1 (the page always asks for spreadsheet-safe CSV)
    browser.find_element(By.CSS_SELECTOR, "#export-buttons button[data-format='csv']").click()
    saved = downloads / "notes.csv"
    wait(browser, lambda b: saved.exists() and not list(downloads.glob("*.crdownload")))
    wait(browser, lambda b: export_status(b).text.startswith("Done"))
    direct = httpx.get(
        f"{server.base_url}/datasets/notes/stream",
        params={"format": "csv", "fields": "id,title,score", "score__gte": "95", "csv_safe": "1"},
        headers=server.headers(),
    )
    assert saved.read_bytes() == direct.content
    saved_rows = list(csv.DictReader(io.StringIO(saved.read_text())))
    assert [int(r["id"]) for r in saved_rows] == expected
    assert [r["title"] for r in saved_rows if r["id"] == "96"] == ["'=2+3"]
    assert f"{len(expected)} rows" in export_status(browser).text
    assert not browser.find_element(By.ID, "cancel").is_displayed()  # done: nothing to cancel
    python = browser.find_element(By.ID, "code-python").text
    assert 'client.to_pandas("notes", fields="id,title,score", score__gte="95")' in python


def _slow_sessions(database_url: str) -> int:
    return int(
        run(
            execute(
                database_url,
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(0.0005)%' "
                "AND pid <> pg_backend_pid()",
            )
        )
    )


def _start_slow_export(browser: WebDriver, server: Server) -> None:
    browser.get(server.base_url + "/ui/datasets/slow")
    wait(browser, lambda b: b.find_element(By.ID, "dataset").is_displayed())
    wait(browser, lambda b: len(preview_ids(b)) == 100)
    browser.find_element(By.CSS_SELECTOR, "#export-buttons button[data-format='csv']").click()
    wait(
        browser, lambda b: " MB" in export_status(b).text and "0.0 MB" not in export_status(b).text
    )
    assert _slow_sessions(server.database_url) == 1


def test_cancel_stops_the_export_on_the_server(
    browser: WebDriver, server: Server, downloads: Path
) -> None:
    sign_in(browser, server)
    _start_slow_export(browser, server)
    browser.find_element(By.ID, "cancel").click()
    wait(browser, lambda b: export_status(b).text.startswith("Cancelled"))
    deadline = time.monotonic() + 10
    while _slow_sessions(server.database_url) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _slow_sessions(server.database_url) == 0
    idle = run(
        execute(
            server.database_url,
            "SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%' "
            "AND pid <> pg_backend_pid()",
        )
    )
    assert idle == 0
    assert not (downloads / "slow.csv").exists()


def test_a_failed_export_says_so_and_saves_nothing(
    browser: WebDriver, server: Server, downloads: Path
) -> None:
    sign_in(browser, server)
    _start_slow_export(browser, server)
    run(
        execute(
            server.database_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE query LIKE '%pg_sleep(0.0005)%' AND pid <> pg_backend_pid()",
        )
    )
    wait(browser, lambda b: "failed" in export_status(b).text)
    status = export_status(browser)
    assert "incomplete" in status.text and "Done" not in status.text
    assert status.get_attribute("class") == "error"
    assert not (downloads / "slow.csv").exists()


def test_the_page_has_strict_security_headers_and_no_inline_script(server: Server) -> None:
    for path in ("/", "/ui/datasets/notes", "/ui/static/app.js", "/ui/static/app.css"):
        response = httpx.get(server.base_url + path)
        assert response.status_code == 200
        for name, value in ui.SECURITY_HEADERS.items():
            assert response.headers[name] == value
        assert "'unsafe-inline'" not in response.headers["content-security-policy"]
    page = httpx.get(server.base_url + "/").text
    assert (
        "<script>" not in page
        and "<style" not in page
        and " on" not in page.split("<body")[1].split(">")[0]
    )
    assert "http://" not in page and "https://" not in page  # nothing from another origin
    # a traversal sent as it is written (httpx would normalise it to /ui/settings.py)
    for raw in ("/ui/static/../settings.py", "/ui/static/%2e%2e/settings.py"):
        sock = raw_request(server, raw)
        answer = read_all(sock)
        sock.close()
        assert answer.startswith(b"HTTP/1.1 404"), answer[:200]
        assert b"class Settings" not in answer and b"pydantic" not in answer


def test_a_phone_width_keeps_the_page_usable(browser: WebDriver, server: Server) -> None:
    sign_in(browser, server)
    browser.set_window_size(390, 844)
    try:
        open_dataset(browser, "notes")
        wait(browser, lambda b: len(preview_ids(b)) == 100)
        width = browser.execute_script("return document.documentElement.scrollWidth")
        assert width <= 390  # wide tables scroll inside their box, not the page
        assert browser.find_element(By.CSS_SELECTOR, "#export-buttons button").is_displayed()
    finally:
        browser.set_window_size(1280, 1000)


def test_the_keyboard_reaches_a_dataset_and_its_export(browser: WebDriver, server: Server) -> None:
    from selenium.webdriver.common.keys import Keys

    sign_in(browser, server)
    body = browser.find_element(By.TAG_NAME, "body")
    for _ in range(10):
        body.send_keys(Keys.TAB)
        if browser.switch_to.active_element.text == "notes":
            break
    assert browser.switch_to.active_element.text == "notes"
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    wait(browser, lambda b: b.find_element(By.ID, "dataset").is_displayed())
    wait(browser, lambda b: len(preview_ids(b)) == 100)
    for _ in range(40):
        browser.switch_to.active_element.send_keys(Keys.TAB)
        if browser.switch_to.active_element.get_attribute("data-format") == "csv":
            break
    assert browser.switch_to.active_element.get_attribute("data-format") == "csv"


@pytest.mark.parametrize(("path", "rendered"), [("/docs", ".opblock"), ("/redoc", "h1")])
def test_the_api_docs_render_offline_under_a_strict_policy(
    browser: WebDriver, server: Server, path: str, rendered: str
) -> None:
    r = httpx.get(server.base_url + path)
    policy = r.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy and "default-src 'none'" in policy
    script_src = policy.split("script-src ")[1].split(";")[0]
    assert "unsafe-inline" not in script_src and "http" not in policy
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["x-content-type-options"] == "nosniff"
    asset = httpx.get(server.base_url + "/static-offline-docs/swagger-ui.css")
    assert asset.headers["x-content-type-options"] == "nosniff"
    browser.get_log("browser")  # what earlier pages logged
    browser.get(server.base_url + path)
    wait(
        browser,
        lambda b: any(
            "rowstream" in e.text or e.text for e in b.find_elements(By.CSS_SELECTOR, rendered)
        ),
    )
    refused = [
        e["message"]
        for e in browser.get_log("browser")
        if "Content Security Policy" in e["message"]
    ]
    # ReDoc's "powered by" logo comes from its CDN: refused, as everything from elsewhere
    assert [m for m in refused if "cdn.redoc.ly/redoc/logo-mini.svg" not in m] == []


def test_a_wide_preview_keeps_cells_on_one_line_and_export_in_reach(
    browser: WebDriver, server: Server
) -> None:
    """20 columns of flights: each row one line high (a long value cut, whole on hover),
    the table scrolling in its own box, Export above the 100 rows, the count on request."""
    sign_in(browser, server)
    open_dataset(browser, "flights")
    wait(browser, lambda b: len(preview_ids(b)) == 100)
    heights = browser.execute_script(
        "return [...document.querySelectorAll('#preview tbody tr')].map("
        "r => r.getBoundingClientRect().height)"
    )
    assert max(heights) < 40, max(heights)  # one line (was ~77 px: "20|13" broken in cells)
    year = browser.find_element(By.CSS_SELECTOR, "#preview tbody tr td:nth-child(2)")
    assert year.text == "2013"
    remark = browser.find_element(By.CSS_SELECTOR, "#preview tbody tr td:last-child")
    assert remark.get_attribute("title") == remark.text  # the whole value, on hover
    cut = browser.execute_script(
        "return arguments[0].scrollWidth > arguments[0].clientWidth", remark
    )
    assert cut  # shown cut to the cell's width
    box = browser.execute_script(
        "const b = document.querySelector('.preview-box'); "
        "return [b.scrollWidth > b.clientWidth, b.getBoundingClientRect().height];"
    )
    assert box[0] and box[1] < 600  # scrolls sideways in a box of bounded height
    export_top = browser.find_element(By.ID, "export-buttons").rect["y"]
    preview_top = browser.find_element(By.ID, "preview").rect["y"]
    assert export_top < preview_top  # reachable without scrolling past the rows
    count = browser.find_element(By.ID, "count-text")
    wait(browser, lambda b: "About 300 rows match" in count.text)  # not the preview's 100
    browser.find_element(By.ID, "count-exact").click()
    wait(browser, lambda b: "300 rows match (counted)" in count.text)
    hint = browser.find_element(By.ID, "add-filter")
    hint.click()
    row = browser.find_element(By.CSS_SELECTOR, "#filters .filter")
    Select(row.find_element(By.CSS_SELECTOR, ".column")).select_by_value("time_hour")
    placeholder = row.find_element(By.CSS_SELECTOR, ".value").get_attribute("placeholder")
    assert "2024-01-31T12:00:00Z" in placeholder and "2024-01-31" in placeholder
