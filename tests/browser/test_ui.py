"""The UI in headless Chromium: log in, import, select, run, watch, inspect, retry, edit a mapping."""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Dialog, Page, expect, sync_playwright
from pydantic import SecretStr

from enrichhq import settings
from enrichhq.db import migrate
from tests import helpers
from tests.helpers import homepage_ddl
from tests.integration.test_extract_config import links_ddl
from tests.live import LiveServer, free_port
from tests.stubs import API_KEY, Stub

pytestmark = pytest.mark.browser
CHROMIUM = "/usr/bin/chromium"
#: where the README's screenshots live; the tests write there only when asked to
#: (ENRICHHQ_UPDATE_SCREENSHOTS=1), else into a temporary folder, so a run changes no tracked file.
DOCS_SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
PASSWORD = "ui-test-password"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        helpers.unavailable("Chromium", f"no {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder screenshots go to: docs/screenshots when updating them, else a temporary one."""
    if os.environ.get("ENRICHHQ_UPDATE_SCREENSHOTS") == "1":
        return DOCS_SHOTS
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture
def server(tmp_path: Path, stub: Stub) -> Iterator[LiveServer]:
    data = tmp_path / "data"
    conf = settings.Settings(
        enrichhq_data_dir=data,
        hq_database_url=None,
        workspace_database_url=None,
        zenrows_api_key=SecretStr(API_KEY),
        zenrows_api_url=stub.zenrows_url,
        enrichhq_retry_base_delay=0.01,
        enrichhq_api_key=SecretStr("api-key"),
        enrichhq_ui_password=SecretStr(PASSWORD),
        enrichhq_sweep_interval_s=0.5,
    )
    migrate.upgrade(conf.resolved_hq_url())
    with sqlite3.connect(data / "workspace.db") as ws:
        ws.execute(homepage_ddl("sqlite"))
    with sqlite3.connect(data / "hq.db") as hq_db:
        hq_db.execute(
            "INSERT INTO db_driven_enrichment_workflows (workflow_slug, title, overall_step_number, provider, "
            "destination_db, destination_table_name, destination_field_mappings, provider_config) VALUES "
            "('scrape-homepage-via-zenrows', 'Scrape Homepage', 1, 'zenrows', 'workspace', 'company_homepage_scrapes', "
            '\'{"homepage_html": "homepage_html", "scraped_at": "scraped_at"}\', \'{"max_attempts": 1}\')'
        )
    with LiveServer(conf, free_port()) as live:
        yield live


@pytest.fixture
def page(browser: Browser, server: LiveServer) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1360, "height": 860}, base_url=server.url)
    page = context.new_page()
    dialogs: list[str] = []

    def refuse(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", refuse)
    refused: list[str] = []

    def csp(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            refused.append(message.text)

    page.on("console", csp)
    yield page
    context.close()
    assert dialogs == [], f"a script ran in the UI: {dialogs}"
    assert refused == [], f"the page needed something its Content-Security-Policy refuses: {refused}"


def log_in(page: Page) -> None:
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login"))
    page.fill("input[name=password]", "wrong")
    page.click("button:has-text('Log in')")
    expect(page.locator(".flash.bad")).to_contain_text("not right")
    page.fill("input[name=password]", PASSWORD)
    page.click("button:has-text('Log in')")
    expect(page.locator("h1, .bar").first).to_be_visible()
    expect(page).to_have_url(re.compile(r"/$"))


def test_the_whole_journey(shots: Path, page: Page, server: LiveServer, tmp_path: Path, stub: Stub) -> None:
    log_in(page)
    csv = tmp_path / "companies.csv"
    csv.write_text(
        "domain,name\nok-acme.com,Acme Analytics\nok-globex.com,Globex\nratelimit-initech.com,Initech\n"
        "script-evil.com,<script>alert(1)</script>\nok-hooli.com,Hooli\n",
        encoding="utf-8",
    )
    page.set_input_files("input[type=file]", str(csv))
    page.click("text=Import CSV")
    expect(page.locator(".flash")).to_contain_text("Imported companies.csv: 5 new, 0 updated")
    expect(page.locator("table.grid")).to_contain_text("<script>alert(1)</script>")  # shown as text

    # The page's select-all box (a script of our own, as the CSP allows) checks every row and clears them.
    boxes = page.locator("input[name=company_ids]")
    page.check("input[aria-label='select page']")
    expect(boxes.and_(page.locator(":checked"))).to_have_count(5)
    page.uncheck("input[aria-label='select page']")
    expect(boxes.and_(page.locator(":checked"))).to_have_count(0)

    # Select three companies by hand, ask for Run step 1, and read the confirmation.
    for domain in ("ok-acme.com", "ok-globex.com", "ratelimit-initech.com"):
        page.check(f"input[aria-label='select {domain}']")
    page.click("button.run[data-step='1']")
    expect(page.locator(".confirm")).to_contain_text("3 companies will run")
    page.click(".confirm button:has-text('Cancel')")
    expect(page.locator(".confirm")).to_have_count(0)
    page.click("button.run[data-step='1']")
    expect(page.locator(".confirm")).to_contain_text("3 companies will run")
    expect(page.locator(".confirm .cost")).to_have_text("15")  # 3 x 5 credits (js_render)
    page.click(".confirm button:has-text('Start')")
    expect(page).to_have_url(re.compile(r"/batches/[0-9a-f-]{36}$"))
    expect(page.locator("#batch-status")).to_have_text("completed", timeout=20_000)
    expect(page.locator("[data-state=succeeded]")).to_have_text("2")
    expect(page.locator("[data-state=failed]")).to_have_text("1")
    expect(page.locator("#batch-cost")).to_have_text("10")  # what the stub's X-Request-Cost headers said
    page.click("table.failures summary")
    expect(page.locator("pre.error")).to_contain_text("429")
    page.screenshot(path=str(shots / "batch.png"), full_page=True)

    page.click("button:has-text('Retry failed')")
    expect(page.locator("#batch-status")).to_have_text("completed", timeout=20_000)
    expect(page.locator("[data-state=succeeded]")).to_have_text("3")
    expect(page.locator("[data-state=failed]")).to_have_count(0)

    # All matching the rest: the done ones are skipped in the confirmation.
    page.click("text=Companies")
    # A cell shows what its step stored, the state a mark beside it (or the state alone).
    expect(page.locator("table.grid td.cell .done")).to_have_count(3)
    page.screenshot(path=str(shots / "grid.png"), full_page=True)
    page.check("#all-matching")
    page.click("button.run[data-step='1']")
    expect(page.locator(".confirm")).to_contain_text("2 companies will run")
    expect(page.locator(".confirm")).to_contain_text("3 skipped: already completed in play 'default'")
    page.click(".confirm button:has-text('Start')")
    expect(page.locator("#batch-status")).to_have_text("completed", timeout=20_000)
    page.click("text=Companies")
    expect(page.locator("table.grid td.cell .done")).to_have_count(5)
    # A click on a cell opens the side panel: the stored row and the step's calls.
    page.locator("table.grid td.cell a.open").first.click()
    expect(page.locator("#panel .panel")).to_contain_text("Calls")
    page.click("#panel button[data-clear=panel]")
    expect(page.locator("#panel .panel")).to_have_count(0)

    # The scraped page full of scripts shows in a sandboxed frame and as text; nothing runs.
    page.click("text=script-evil.com")
    expect(page.locator("iframe.preview")).to_have_attribute("sandbox", "")
    page.click("text=source")
    expect(page.locator("pre").first).to_contain_text("alert('body')")

    # Edit the mapping: a missing column is refused with the validator's message, a real one saved.
    page.click("text=Workflows")
    page.click("text=Edit")
    expect(page.locator("#column-names option")).to_have_count(7)
    page.fill("input[aria-label='column 2']", "no_such_column")
    page.click("text=Validate and save")
    expect(page.locator(".flash.bad")).to_contain_text("no such column")
    page.fill("input[aria-label='data key 3']", "final_url")
    page.fill("input[aria-label='column 2']", "scraped_at")
    page.fill("input[aria-label='column 3']", "final_url")
    page.screenshot(path=str(shots / "workflow-editor.png"), full_page=True)
    page.click("text=Validate and save")
    expect(page.locator(".flash")).to_contain_text("Saved scrape-homepage-via-zenrows")
    expect(page.locator("table.list")).to_contain_text("final_url → final_url")

    page.click("text=Log")
    expect(page.locator("table.list")).to_contain_text("succeeded")
    page.select_option("select[name=status]", "failed")
    page.click("text=Filter")
    expect(page.locator("table.list tbody tr")).to_have_count(1)


def test_run_steps_lands_on_the_run_page(shots: Path, page: Page, server: LiveServer, tmp_path: Path) -> None:
    """ "Run steps" 1-2: the run page shows a bar per step, polls, and both reach done."""
    data = tmp_path / "data"
    with sqlite3.connect(data / "workspace.db") as ws:
        ws.execute(links_ddl("sqlite"))
    with sqlite3.connect(data / "hq.db") as hq_db:
        hq_db.execute(
            "INSERT INTO db_driven_enrichment_workflows (workflow_slug, title, overall_step_number, provider, "
            "destination_db, destination_table_name, destination_field_mappings, provider_config) VALUES "
            "('extract-case-study-links', 'Case-study links', 2, 'extract', 'workspace', "
            '\'company_case_study_links\', \'{"matching_links": "urls", "title": "page_title"}\', '
            '\'{"inputs": {"html": "{{ steps[\'\'scrape-homepage-via-zenrows\'\'].homepage_html }}"}, '
            '"link_patterns": ["case-stud"]}\')'
        )
    log_in(page)
    csv = tmp_path / "companies.csv"
    csv.write_text(
        "domain,name\nok-acme.com,Acme\nslow-globex.com,Globex\nunprocessable-initech.com,Initech\n",
        encoding="utf-8",
    )
    page.set_input_files("input[type=file]", str(csv))
    page.click("text=Import CSV")
    expect(page.locator(".flash")).to_contain_text("Imported companies.csv: 3 new, 0 updated")
    page.check("#all-matching")
    page.fill("input[aria-label='steps to run together']", "1-2")
    page.click("button:has-text('Run steps')")
    expect(page.locator(".confirm h3")).to_have_count(2)
    page.click(".confirm button:has-text('Start')")
    expect(page).to_have_url(re.compile(r"/runs/view\?batch=[0-9a-f-]{36}&batch=[0-9a-f-]{36}$"))
    steps = page.locator("section.step")
    expect(steps).to_have_count(2)
    expect(page.locator("#run-status")).to_have_text("completed", timeout=20_000)
    expect(page.locator("#run")).to_have_attribute("data-final", "yes")
    for number, slug in ((1, "scrape-homepage-via-zenrows"), (2, "extract-case-study-links")):
        step = page.locator(f"section.step[data-step='{number}']")
        expect(step).to_have_attribute("data-slug", slug)
        expect(step.locator(".done")).to_have_text("3")
        expect(step.locator(".total")).to_have_text("3")
        expect(step.locator("[role=progressbar]")).to_have_attribute("aria-valuenow", "100")
    first, second = (page.locator(f"section.step[data-step='{n}']") for n in (1, 2))
    expect(first.locator("[data-state=failed]")).to_have_text("1")
    expect(second.locator(".counts")).to_contain_text("1 skipped: input missing")
    expect(page.locator("#run-finished")).to_have_text("3")
    expect(page.locator("#run-succeeded")).to_have_text("2")
    expect(page.locator("button:has-text('Cancel every step')")).to_have_count(0)
    assert server.app.paths["/runs/progress"] >= 1  # it got there by polling the fragment
    page.screenshot(path=str(shots / "run.png"), full_page=True)
    first.locator("a:has-text('batch page')").click()
    expect(page).to_have_url(re.compile(r"/batches/[0-9a-f-]{36}$"))
    expect(page.locator("h1")).to_contain_text("scrape-homepage-via-zenrows")


def test_nothing_is_reachable_without_logging_in(page: Page, server: LiveServer) -> None:
    for path in ("/", "/batches", "/workflows", "/log", "/workflows/new", "/runs/view"):
        page.goto(path)
        expect(page).to_have_url(re.compile(r"/login"))
    # The login check comes before the CSRF check: a stranger is sent to log in, not told why.
    response = page.request.post(f"{server.url}/import", max_redirects=0)
    assert response.status == 303 and response.headers["location"].startswith("/login"), response.status
    log_in(page)
    forged = page.request.post(f"{server.url}/logout", form={"csrf": "forged"})
    assert forged.status == 403
    cookies = {c["name"]: c for c in page.context.cookies()}
    session = cookies["enrichhq_session"]
    assert session["httpOnly"] and session["sameSite"] == "Strict"


def test_a_test_run_writes_its_screenshots_to_a_temporary_folder(shots: Path) -> None:
    """Only ENRICHHQ_UPDATE_SCREENSHOTS=1 rewrites the README's tracked screenshots."""
    if os.environ.get("ENRICHHQ_UPDATE_SCREENSHOTS") == "1":
        assert shots == DOCS_SHOTS
    else:
        assert DOCS_SHOTS not in (shots, *shots.parents)
