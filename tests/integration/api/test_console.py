"""The web console in a real headless Chromium against a real ``govbus serve``: clerks sign in
with their agencies' tokens, file, decide and resolve through the pages, in Chinese and in
English; another agency's case is refused; a form without its CSRF token is refused. Every
page visited is saved as a screenshot under ``tests/artifacts/console/``."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from govbus.core import db
from govbus.core.catalogue import default_schemas_dir
from tests.integration.api.conftest import Service, token
from tests.integration.api.test_cases_api import open_case

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
SHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "console"
HRSS = "hrss.social_insurance_enrolment"
MARRIAGE = "civil_affairs.marriage_register"
WAIT_S = 15.0

#: the form controls of the page that no <label for=…> names
UNLABELLED = """return [...document.querySelectorAll(
    'input:not([type=hidden]), select, textarea')].filter(
    e => !e.id || !document.querySelector(`label[for="${e.id}"]`))
    .map(e => e.name || e.outerHTML)"""

needs_chromium = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="needs Debian's chromium and chromium-driver (.ci/run installs them: "
           "apt-get install -y chromium chromium-driver)")


class Browser:
    """One headless Chromium; :meth:`sign_in` starts a clean session as an agency."""

    def __init__(self, service: Service) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service as DriverService

        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for arg in ("--headless=new", "--no-sandbox", "--window-size=1366,768",
                    "--disable-gpu", "--disable-dev-shm-usage", "--lang=zh-CN"):
            options.add_argument(arg)
        self.driver = webdriver.Chrome(service=DriverService(str(CHROMEDRIVER)),
                                       options=options)
        self.service = service
        SHOTS.mkdir(parents=True, exist_ok=True)

    def open(self, path: str) -> None:
        self.driver.get(self.service.url + path)

    def css(self, selector: str):  # type: ignore[no-untyped-def]
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, selector)

    def wait(self, selector: str, text: str | None = None):  # type: ignore[no-untyped-def]
        """The element ``selector`` once present (and containing ``text``), within WAIT_S."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec
        from selenium.webdriver.support.ui import WebDriverWait

        wait = WebDriverWait(self.driver, WAIT_S)
        if text is not None:
            wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, selector), text),
                       f"{selector} to show {text!r}")
        return wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, selector)),
                          f"{selector} to appear")

    def until(self, condition, what: str):  # type: ignore[no-untyped-def]
        """``condition(driver)`` once truthy, within WAIT_S (a page just submitted)."""
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, WAIT_S, ignored_exceptions=[
            StaleElementReferenceException]).until(condition, f"{what} within {WAIT_S} s")

    def shot(self, name: str) -> None:
        """The whole page (up to 1,800 px tall) at 1366 px wide, as ``name``.png, once every
        control on it has its label and the page states its language."""
        unlabelled = self.driver.execute_script(UNLABELLED)
        assert unlabelled == [], f"{name}: controls without a label: {unlabelled}"
        assert self.css("html").get_attribute("lang") in ("zh-CN", "en"), name
        height = self.driver.execute_script("return document.documentElement.scrollHeight")
        self.driver.set_window_size(1366, min(max(768, int(height) + 140), 1800))
        try:
            self.driver.save_screenshot(str(SHOTS / f"{name}.png"))
        finally:
            self.driver.set_window_size(1366, 768)

    def sign_in(self, agency: str) -> None:
        from selenium.webdriver.common.keys import Keys

        self.open("/signin")
        self.driver.delete_all_cookies()
        self.open("/signin")
        # by the keyboard alone: the token typed, Enter submits
        self.wait("#token").send_keys(token(self.service.database_url, agency) + Keys.ENTER)
        self.wait("#who", agency)

    def quit(self) -> None:
        self.driver.quit()


@pytest.fixture
def browser(service: Service) -> Iterator[Browser]:
    b = Browser(service)
    yield b
    b.quit()


@needs_chromium
def test_a_request_filed_decided_granted_objected_to_and_revoked_in_the_browser(
        service: Service, browser: Browser) -> None:
    number = f"SC-tax-{uuid.uuid4().hex[:8]}"
    purpose = f"核对参保单位 {uuid.uuid4().hex[:6]}"

    # unauthenticated: sent to sign in; the page is in Chinese by default
    browser.open(f"/requests?resource={HRSS}")
    assert "/signin?next=/requests%3Fresource%3D" in browser.driver.current_url
    assert browser.css("h1").text == "登录"
    browser.shot("signin")

    # tax signs in there and is back on the page it asked for; it files a request
    from selenium.webdriver.common.keys import Keys

    browser.css("#token").send_keys(token(service.database_url, "tax") + Keys.ENTER)
    browser.wait("#who", "tax")
    assert browser.driver.current_url == f"{service.url}/requests?resource={HRSS}"
    browser.open(f"/catalogue/{HRSS}")
    browser.wait("#fields")
    assert "contribution_base" in browser.css("#fields").text
    browser.shot("entry")
    browser.open("/catalogue?share_class=on_application")
    assert HRSS in browser.wait("#catalogue").text
    browser.shot("catalogue")
    # ... with the security commitment it registers first (Art. 24)
    from selenium.webdriver.support.ui import Select

    browser.open("/commitments")
    browser.css("#c-number").send_keys(number)
    Select(browser.css("#c-resources")).select_by_value(HRSS)
    browser.css("#c-purpose").send_keys("税收征管核对")
    for field, day in (("#c-signed", "2026-01-05"), ("#c-until", "2030-12-31")):
        browser.driver.execute_script("arguments[0].value = arguments[1]", browser.css(field),
                                      day)
    browser.css("#c-sha").send_keys("ab" * 32)
    browser.css("#register-commitment").click()
    browser.wait("#done", "已提交")
    assert "有效" in browser.css(f"#commitment-{number}").text
    browser.shot("commitments")
    browser.open(f"/requests?resource={HRSS}")
    browser.css("#fields").send_keys("resident_id,name,employer_uscc")
    browser.css("#purpose").send_keys(purpose)
    Select(browser.css("#commitment")).select_by_value(number)
    browser.css("#file-request").click()
    browser.wait("#done", "待审批")
    row = [r for r in browser.css("#filed").text.splitlines() if HRSS in r][-1]
    request_id = int(row.split()[0])
    assert "剩余" in browser.css(f"#filed-{request_id}").text  # the working-day deadline
    browser.shot("requests-filed")

    # hrss sees it in its inbox with its deadline, and approves
    browser.sign_in("hrss")
    browser.open("/requests")
    line = browser.wait(f"#request-{request_id}")
    assert purpose in line.text and "tax" in line.text
    assert re.search(r"剩余 \d+ 个工作日", browser.css(f"#request-{request_id} .deadline").text)
    browser.shot("requests-inbox")
    browser.css(f"#reason-{request_id}").send_keys("符合共享条件")
    browser.css(f"#approve-{request_id}").click()
    browser.wait("#done", "已批准")
    assert not browser.driver.find_elements("css selector", f"#request-{request_id}")

    # tax sees the grant in force
    browser.sign_in("tax")
    browser.open("/grants")
    granted = browser.wait("#grants-in_force").text
    assert HRSS in granted and "employer_uscc" in granted
    grant_id = [r for r in browser.css("#grants-in_force").find_elements(
        "css selector", "tbody tr") if HRSS in r.text][-1].get_attribute("id")
    assert not browser.driver.find_elements("css selector", f"#{grant_id} form")  # not its own
    browser.shot("grants")

    # ... is told so in its notices, and acknowledges; then objects to the data received
    browser.open("/notices")
    rows = browser.wait("#notices").find_elements("css selector", "tr.unread")
    told = [r for r in rows if "申请已获授权" in r.text and f"request_id: {request_id}" in r.text]
    assert told, [r.text for r in rows]
    notice_id = told[0].get_attribute("id").removeprefix("notice-")
    browser.shot("notices")
    browser.css(f"#ack-{notice_id}").click()
    browser.until(lambda d: not d.find_elements("css selector", f"#ack-{notice_id}"),
                  "the notice acknowledged")
    assert "unread" not in (browser.css(f"#notice-{notice_id}").get_attribute("class") or "")
    browser.open("/objections")
    browser.css("#against").send_keys("hrss")
    browser.css("#o-resource").send_keys(HRSS)
    doubt = f"参保单位与登记不符 {uuid.uuid4().hex[:6]}"
    browser.css("#o-reason").send_keys(doubt)
    browser.css("#file-objection").click()
    browser.wait("#done", "已提交")
    mine = [r for r in browser.css("#objections").find_elements("css selector", "tbody tr")
            if doubt in r.text]
    assert len(mine) == 1 and "待处理" in mine[0].text
    objection_id = mine[0].get_attribute("id").removeprefix("objection-")
    browser.sign_in("hrss")
    browser.open("/objections")
    browser.wait(f"#answer-{objection_id}").send_keys("已复核，数据无误")
    browser.css(f"#send-{objection_id}").click()
    browser.wait(f"#objection-{objection_id}", "已复核，数据无误")
    assert "已答复" in browser.css(f"#objection-{objection_id}").text
    browser.shot("objections")

    # the provider revokes the grant with a reason; it is no longer in force
    browser.open("/grants")
    number_ = grant_id.removeprefix("grant-")
    browser.wait(f"#revoke-reason-{number_}").send_keys("用途已完成")
    browser.css(f"#{grant_id} button").click()
    browser.wait("#done", "已撤销")
    assert number_ in browser.css("#grants-ended").text
    with service.client("tax") as api:
        states = {g["grant_id"]: g["state"] for g in api.get("/v1/grants").json()}
        assert states[int(number_)] == "revoked"


@needs_chromium
def test_a_case_resolved_by_its_owner_and_refused_to_another_agency(
        service: Service, browser: Browser) -> None:
    dsn = service.database_url
    owner, other = f"own_{uuid.uuid4().hex[:6]}", f"oth_{uuid.uuid4().hex[:6]}"
    case_id = open_case(dsn, owner, other)
    browser.sign_in(f"nosy_{uuid.uuid4().hex[:6]}")
    browser.open(f"/cases/{case_id}")
    assert browser.wait("#rule").text == "access.not_yours"
    assert browser.css("#refused").text.startswith("403")
    browser.shot("case-refused")
    browser.sign_in(owner)
    browser.open("/cases")
    assert str(case_id) in browser.wait("#case-inbox").text
    browser.shot("cases")
    browser.open(f"/cases/{case_id}")
    assert "李强" in browser.css(".sides").text and "李刚" in browser.css(".sides").text
    browser.shot("case")
    browser.css("#res-corrected").click()
    browser.css("#note").send_keys("已核对登记档案")
    browser.css("#resolve").click()
    browser.wait("#resolution", "已核对登记档案")
    assert "已更正" in browser.css("#resolution").text
    with service.client(owner) as api:
        assert api.get(f"/v1/cases/{case_id}").json()["status"] == "resolved"

    # the operations page counts the agency's own rejections by rule, not another's
    with db.transaction(dsn) as conn, conn.cursor() as cur:
        for agency, rule in ((owner, "contract.type"), (other, "identifier.uscc")):
            cur.execute("INSERT INTO event_counts (day, agency, resource_id, outcome, rule, "
                        "events, last_at) VALUES (current_date, %s, %s, 'rejected', %s, 7, "
                        "now())", (agency, f"{agency}.register", rule))
    browser.open("/operations")
    dlq = browser.wait("#dlq").text
    assert "contract.type" in dlq and "7" in dlq and "identifier.uscc" not in dlq

    # the remaining pages render for the agency
    for page in ("proposals", "reports", "operations"):
        browser.open(f"/{page}")
        browser.wait("main h1")
        assert "Refused" not in browser.css("main").text, page
        browser.shot(page)
    assert not browser.driver.find_elements("css selector", "#annual")  # Art. 26: oversight
    browser.open("/operations")
    browser.wait("main h1")
    assert not browser.driver.find_elements("css selector", "#lag-heading")  # the center's


@needs_chromium
def test_the_center_reads_the_reports_decides_a_proposal_and_switches_to_english(
        service: Service, browser: Browser) -> None:
    # the information center reads the annual report and every agency's evaluation
    browser.sign_in("information_center")
    browser.open("/reports")
    assert "年度报告" in browser.wait("#annual").find_element("xpath", "..").text
    assert browser.driver.find_elements("css selector", "#chart-timeliness rect")
    browser.css("#verify").click()
    assert "已校验" in browser.wait("#log-verified").text  # rows checked, intact or not
    browser.shot("reports-center")
    # the consumer groups' lag, asked of the broker (an empty broker has no groups yet)
    browser.open("/operations")
    assert browser.wait("#lag-heading").text == "消费延迟"
    browser.shot("operations-center")
    schema = json.loads((default_schemas_dir() / "civil_affairs/marriage_register.avsc")
                        .read_text())
    schema["doc"] += f" ({uuid.uuid4().hex[:6]})"
    with service.client("civil_affairs") as api:
        proposed = api.post("/v1/catalogue/proposals", params={"resource": MARRIAGE},
                            content=json.dumps(schema).encode(),
                            headers={"content-type": "application/json"})
        assert proposed.status_code == 201, proposed.text
        proposal_id = proposed.json()["proposal_id"]
    browser.open("/proposals")
    browser.wait(f"#p-reason-{proposal_id}").send_keys("说明不完整，请补充")
    browser.shot("proposals-center")
    browser.css(f"#reject-proposal-{proposal_id}").click()
    browser.until(lambda d: not d.find_elements("css selector", f"#p-reason-{proposal_id}"),
                  "the proposal rejected")
    assert "已驳回" in browser.css(f"#proposal-{proposal_id}").text
    with service.client("civil_affairs") as api:
        assert api.get(f"/v1/catalogue/proposals/{proposal_id}").json()["status"] == "rejected"

    # the English switch: the same page with English labels
    browser.open("/requests")
    browser.css("#lang-en").click()
    browser.wait("main h1", "Sharing requests")
    nav = browser.css("nav.main").text
    assert "Requests" in nav and "Catalogue" in nav and "资源目录" not in nav
    browser.shot("requests-en")


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


def test_a_form_without_its_csrf_token_is_refused(service: Service) -> None:
    with httpx.Client(base_url=service.url, timeout=30) as web:
        page = web.get("/signin")
        cookie = page.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        # signing in needs the sign-in form's own token
        bad = web.post("/signin", data={"token": token(service.database_url, "tax")})
        assert bad.status_code == 403 and "console.csrf" in bad.text
        wrong = web.post("/signin", data={"token": "gbt_tax.not-its-secret",
                                          "csrf": _csrf(page.text)})
        assert wrong.status_code == 401 and 'id="signin-failed"' in wrong.text
        signed = web.post("/signin", data={"token": token(service.database_url, "tax"),
                                           "csrf": _csrf(page.text), "next": "/requests"})
        assert signed.status_code == 303 and signed.headers["location"] == "/requests"
        form = web.get("/requests")
        assert form.status_code == 200
        assert "script-src 'none'" in form.headers["content-security-policy"]
        assert form.headers["cache-control"] == "no-store"
        malformed = web.get("/cases/not-a-number")  # a page's refusal is a page, not JSON
        assert malformed.status_code == 422 and "<html" in malformed.text
        body = {"resource": HRSS, "purpose": "x", "commitment": "none"}
        for posted in (body, body | {"csrf": "not-the-session's"}):
            refused = web.post("/requests", data=posted)
            assert refused.status_code == 403, refused.text
            assert "console.csrf" in refused.text and "<html" in refused.text
        # with the token the same form reaches the API's rules (an unknown commitment: 422)
        reached = web.post("/requests", data=body | {"csrf": _csrf(form.text)})
        assert reached.status_code == 422 and "commitment." in reached.text
        # signed out, the session's cookie, or a copy of it, no longer opens a page
        copy = web.cookies.get("govbus_console")
        assert web.post("/signout", data={"csrf": _csrf(form.text)}).status_code == 303
        assert web.get("/requests").status_code == 303
    with httpx.Client(base_url=service.url, timeout=30,
                      cookies={"govbus_console": copy or ""}) as thief:
        assert thief.get("/requests").headers["location"].startswith("/signin")
