"""The operator's page (DESIGN §11) in a real headless Chromium (Debian's
`chromium` and `chromium-driver`, driven by selenium) against a real `hookbus
serve`: every page loads without a console error, a failed job shows the seed's
statuses, Retry delivers a dead letter, new events arrive live, Pause pauses,
and login, CSRF and logout hold.

With HOOKBUS_SCREENSHOTS=1 the tests save docs/screenshots/overview.png and
failed-job.png (the README and docs/page.md show them)."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from hookbus.bus.jobs.runner import SKIP_CRITICAL_HOOK

from .conftest import Receiver, Site, http_ready, http_request, serving_receiver, toml_value, wait_for
from .test_jobs import add_jobs, seed_job
from .test_process import jsonl_sub, run_cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; .ci/run does)")

SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
PAGES = ["/", "/jobs", "/jobs/job-failed", "/checks", "/events", "/subscribers", "/silences"]
TOKEN = "page-token-0123456789"
WAIT = 10.0

if CHROMIUM and CHROMEDRIVER:
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait


@pytest.fixture(scope="session")
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM or ""
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900",
                "--lang=en-GB"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture
def page(browser: WebDriver) -> Iterator[WebDriver]:
    """The session's browser, clean for this test: no cookies, no console lines left over."""
    browser.delete_all_cookies()
    browser.get_log("browser")
    yield browser
    browser.delete_all_cookies()


def console_errors(driver: WebDriver) -> list[dict[str, Any]]:
    return [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]


def until(driver: WebDriver, condition: Callable[[Any], Any], what: str, timeout: float = WAIT) -> Any:
    return WebDriverWait(driver, timeout).until(condition, message=f"timed out after {timeout}s waiting for {what}")


def screenshot(driver: WebDriver, name: str) -> None:
    if os.environ.get("HOOKBUS_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(SCREENSHOTS / name))


def add_check(site: Site, **check: Any) -> None:
    table = {"name": "nightly", "job": "flow", "schedule": "0 2 * * *", **check}
    site.config.write_text(site.config.read_text() + "\n[[checks]]\n" + "\n".join(
        f"{k} = {toml_value(v)}" for k, v in table.items()) + "\n")


def with_tokens(site: Site) -> None:
    site.config.write_text(site.config.read_text().replace("[http]\n", f"[http]\ntokens = [{toml_value(TOKEN)}]\n", 1))


async def serve(site: Site, procs: Any) -> None:
    procs("serve", "--config", str(site.config))
    await wait_for(lambda: http_ready(site.url), 20, "hookbus serve to listen")


async def emit(site: Site, type_: str, **data: Any) -> None:
    done = await run_cli("emit", type_, "--data", orjson.dumps(data).decode(), "--config", str(site.config))
    assert done.returncode == 0, done.stdout + done.stderr


def api(site: Site, method: str, path: str, token: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    status, body = http_request(site.http_port, method, path, headers=headers)
    assert status == 200, (status, body)
    return orjson.loads(body)


async def test_every_page_and_a_failed_job(site: Site, procs: Any, page: WebDriver, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    site.configure([jsonl_sub(site)])
    add_jobs(site, [{**seed_job("flow", pre1_fails=True), "env": {"MARKS": str(marks)}},
                    {**seed_job("docs"), "env": {"MARKS": str(marks)}}])
    add_check(site)
    add_check(site, name="docs", job="docs", schedule="30 3 * * *")
    await serve(site, procs)
    for job_id in ("docs-1", "docs-2"):
        ok = await run_cli("run", "docs", "--job-id", job_id, "--config", str(site.config))
        assert ok.returncode == 0, ok.stdout + ok.stderr
    failed = await run_cli("run", "flow", "--job-id", "job-failed", "--config", str(site.config))
    assert failed.returncode == 1, failed.stdout + failed.stderr
    await emit(site, "backup.log", message="hello from the test")

    for path in PAGES:
        page.get(site.url + path)
        until(page, ec.presence_of_element_located((By.CSS_SELECTOR, "footer")), f"{path} to render")
        assert "internal error" not in page.page_source
        if path == "/":
            until(page, ec.presence_of_element_located((By.CSS_SELECTOR, "time[data-local]")), "times in the local zone")
            screenshot(page, "overview.png")
        assert console_errors(page) == [], path

    page.get(site.url + "/jobs/job-failed")
    text = until(page, lambda d: d.find_element(By.TAG_NAME, "main").text, "the job's page")
    assert "❌ Failed" in text and "⏭️ Skipped" in text and "✅ Completed" in text
    assert SKIP_CRITICAL_HOOK in text and "critical hook" in text and "exit status 3" in text
    rows = page.find_elements(By.CSS_SELECTOR, "tr.task")
    assert len(rows) == 7
    assert [r.find_elements(By.TAG_NAME, "td")[3].text for r in rows] == (
        ["❌ Failed"] + ["⏭️ Skipped"] * 4 + ["✅ Completed"] * 2)
    assert page.find_element(By.ID, "delivery-trail").is_displayed()
    hover = page.find_element(By.CSS_SELECTOR, "time[data-local]").get_attribute("title")
    assert hover is not None and hover.endswith(" UTC")
    screenshot(page, "failed-job.png")
    assert console_errors(page) == []

    # Without JavaScript's help the same pages are plain HTML; the API stays JSON to a browser.
    status, body = http_request(site.http_port, "GET", "/jobs?outcome=failed", headers={"Accept": "text/html"})
    assert status == 200 and b"job-failed" in body and b"<table" in body
    status, body = http_request(site.http_port, "GET", "/api/jobs", headers={"Accept": "text/html"})
    assert status == 200 and orjson.loads(body)["jobs"]


async def test_new_event_appears_live(site: Site, procs: Any, page: WebDriver) -> None:
    site.configure([jsonl_sub(site)])
    await serve(site, procs)
    page.get(site.url + "/events")
    until(page, ec.presence_of_element_located((By.CSS_SELECTOR, "#events-body[data-live=open]")), "the live stream to open")
    status, body = await asyncio.to_thread(
        http_request, site.http_port, "POST", "/events",
        orjson.dumps({"specversion": "1.0", "id": "live-1", "source": "test://ui", "type": "backup.log",
                      "data": {"message": "arrives live"}}), {"Content-Type": "application/cloudevents+json"})
    assert status == 202, body
    until(page, lambda d: "arrives live" in d.find_element(By.ID, "events-body").text, "the new event on /events", timeout=2)
    assert console_errors(page) == []


async def test_pause_button_pauses_the_check(site: Site, procs: Any, page: WebDriver) -> None:
    site.configure([jsonl_sub(site)])
    add_check(site)
    await serve(site, procs)
    page.get(site.url + "/checks")
    page.find_element(By.XPATH, "//button[normalize-space()='Pause']").click()
    until(page, lambda d: "Check paused." in d.page_source, "the page to say the check is paused")
    assert "⏸️ Paused" in page.find_element(By.TAG_NAME, "main").text
    (check,) = (await asyncio.to_thread(api, site, "GET", "/api/checks"))["checks"]
    assert check["status"] == "paused"
    page.find_element(By.XPATH, "//button[normalize-space()='Resume']").click()
    until(page, lambda d: "Check resumed." in d.page_source, "the page to say the check is resumed")
    (check,) = (await asyncio.to_thread(api, site, "GET", "/api/checks"))["checks"]
    assert check["status"] != "paused"
    assert console_errors(page) == []


async def test_retry_delivers_a_dead_letter(site: Site, procs: Any, page: WebDriver) -> None:
    async with serving_receiver() as receiver:
        await retry_dead_letter(site, procs, page, receiver)


async def retry_dead_letter(site: Site, procs: Any, page: WebDriver, receiver: Receiver) -> None:
    receiver.status = 400  # permanent: dead-lettered at once
    site.configure([{"name": "hook", "kind": "webhook", "url": receiver.url, "events": ["backup.log"]}])
    await serve(site, procs)
    await emit(site, "backup.log", message="told twice")
    await wait_for(lambda: api(site, "GET", "/api/dead-letters")["dead_letters"], 20, "the dead letter")
    receiver.status = 200

    # The receiver answers on this test's event loop: the browser is driven from a thread.
    def click_retry() -> None:
        page.get(site.url + "/subscribers")
        page.find_element(By.XPATH, "//button[normalize-space()='Retry']").click()
        until(page, lambda d: "Dead letter queued for redelivery." in d.page_source, "the retry to be queued")

    await asyncio.to_thread(click_retry)
    await wait_for(lambda: receiver.received, 20, "the dead letter delivered to the receiver")
    assert receiver.received[0]["body"]["data"]["message"] == "told twice"
    assert console_errors(page) == []


async def test_login_csrf_and_logout(site: Site, procs: Any, page: WebDriver) -> None:
    site.configure([jsonl_sub(site)])
    add_check(site)
    with_tokens(site)
    await serve(site, procs)

    page.get(site.url + "/jobs")
    until(page, ec.url_to_be(site.url + "/login"), "the login form")
    page.find_element(By.NAME, "token").send_keys("not-the-token")
    page.find_element(By.XPATH, "//button[normalize-space()='Log in']").click()
    until(page, lambda d: "That token is not accepted." in d.page_source, "the refusal")
    page.get_log("browser")  # the 401 of the refused login is logged by the browser, as it should be

    page.find_element(By.NAME, "token").send_keys(TOKEN)
    page.find_element(By.XPATH, "//button[normalize-space()='Log in']").click()
    until(page, lambda d: d.find_elements(By.XPATH, "//button[normalize-space()='Log out']"), "the logged-in page")
    assert TOKEN not in page.current_url
    (cookie,) = page.get_cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/" and TOKEN not in cookie["value"]
    for path in PAGES[:2] + PAGES[3:]:
        page.get(site.url + path)
        until(page, ec.presence_of_element_located((By.CSS_SELECTOR, "footer")), f"{path} to render")
    assert console_errors(page) == []

    # A forged post (the session's cookie, no CSRF token) is refused, on the page's actions and on the API.
    forged = page.execute_async_script("""
        const done = arguments[arguments.length - 1];
        Promise.all(["/checks/nightly/pause", "/api/checks/nightly/pause"].map(u =>
            fetch(u, {method: "POST", headers: {"Content-Type": "application/x-www-form-urlencoded"}, body: "check=nightly"})
              .then(r => r.text().then(t => [r.status, t]))))
          .then(done);""")
    for status, text in forged:
        assert status == 403 and "CSRF token" in text, (status, text)
    (check,) = (await asyncio.to_thread(api, site, "GET", "/api/checks", TOKEN))["checks"]
    assert check["status"] != "paused"
    page.get_log("browser")

    page.find_element(By.XPATH, "//button[normalize-space()='Log out']").click()
    until(page, ec.url_to_be(site.url + "/login"), "the login form after logging out")
    page.get(site.url + "/")
    until(page, ec.url_to_be(site.url + "/login"), "the page closed again")
    status, _ = await asyncio.to_thread(http_request, site.http_port, "GET", "/api/jobs")
    assert status == 401
