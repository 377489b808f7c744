"""The web console in a real browser (Debian's headless Chromium) against a real `carina up`.

A user logs in with the API token, watches a tiny pretraining job make progress, reads its
log, suspends and resumes it, deletes it and finds it in the history; a wrong token, or one
for another namespace, sees nothing. Screenshots of each step go to the test's tmp folder
and, when CARINA_TEST_ARTIFACTS is set, to `console/` under it.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from builders import make_job
from embedded_platform import REAL_WORKER, CarinaUp, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
NS = "default"
OTHER_TOKEN = "team-a-token-for-the-console-test"
T = TypeVar("T")


def _browser_missing() -> str | None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (dev extra)")
    return ", ".join(missing) or None


def require_browser() -> None:
    """Skip without Chromium, chromedriver or selenium; fail under CARINA_REQUIRE_CLUSTER."""
    missing = _browser_missing()
    if missing is None:
        return
    if os.environ.get("CARINA_REQUIRE_CLUSTER"):
        pytest.fail(f"the console's browser tests need {missing} (CARINA_REQUIRE_CLUSTER is set)")
    pytest.skip(f"the console's browser tests need {missing}")


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CarinaUp]:
    require_browser()
    state = tmp_path_factory.mktemp("console") / "state"
    state.mkdir(parents=True)
    # A second token, for team-a only: it must not see the default namespace.
    (state / "tokens.yaml").write_text(
        yaml.safe_dump(
            {"tokens": [{"name": "team-a", "token": OTHER_TOKEN, "namespaces": ["team-a"]}]}
        )
    )
    up = CarinaUp(state, REAL_WORKER).start()
    try:
        yield up
    finally:
        up.stop()


class Shots:
    """Numbered screenshots in a tmp folder and, when set, under $CARINA_TEST_ARTIFACTS."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.count = 0
        artifacts = os.environ.get("CARINA_TEST_ARTIFACTS")
        self.copy_to = Path(artifacts) / "console" if artifacts else None

    def take(self, driver: Any, what: str) -> Path:
        self.count += 1
        path = self.folder / f"{self.count:02d}-{what}.png"
        assert driver.save_screenshot(str(path)), f"no screenshot for {what}"
        if self.copy_to is not None:
            self.copy_to.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, self.copy_to / path.name)
        return path


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Shots:
    return Shots(tmp_path_factory.mktemp("console-screenshots"))


@pytest.fixture
def driver() -> Iterator[Any]:
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1400,1100",
        "--disable-gpu",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    chrome = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield chrome
    finally:
        chrome.quit()


def until(driver: Any, check: Callable[[Any], T], timeout: float, what: str) -> T:
    """Wait for `check(driver)` to be truthy; the browser's console in the failure message."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        result: T = WebDriverWait(driver, timeout, poll_frequency=0.3).until(check)
    except TimeoutException:
        logs = [entry.get("message") for entry in driver.get_log("browser")][-10:]
        main = driver.execute_script("return document.getElementById('main')?.innerText || ''")
        raise AssertionError(
            f"timed out after {timeout:.0f}s waiting for {what}\npage: {main[:1500]}\n"
            f"browser console: {logs}"
        ) from None
    return result


def text_of(driver: Any, css: str) -> str:
    """The text shown by the first match of `css`, read in one call (rows are redrawn live)."""
    text = driver.execute_script(
        "const el = document.querySelector(arguments[0]); return el ? el.innerText : ''", css
    )
    return str(text).strip()


def click(driver: Any, by: str, value: str) -> None:
    """Click what a user would click; a row redrawn by the watch meanwhile is found again."""
    from selenium.common.exceptions import StaleElementReferenceException

    until(driver, lambda d: d.find_elements(by, value), 30, f"{value} to click")
    for _ in range(5):
        try:
            driver.find_element(by, value).click()
            return
        except StaleElementReferenceException:
            continue
    raise AssertionError(f"{value} kept being redrawn")


def log_in(driver: Any, url: str, token: str, namespace: str = NS) -> None:
    driver.get(f"{url}/console/")
    until(driver, lambda d: d.find_elements("id", "token"), 30, "the login page")
    driver.find_element("id", "token").send_keys(token)
    box = driver.find_element("id", "namespace")
    box.clear()
    box.send_keys(namespace)
    driver.find_element("id", "login").click()


def session_token(driver: Any) -> str | None:
    token: str | None = driver.execute_script("return sessionStorage.getItem('carina.token')")
    return token


def tiny_job(name: str) -> dict[str, Any]:
    """Real pretraining of the tiny preset, long enough to watch, stopped by the test."""
    return dict(
        make_job(name)
        .with_replicas(1)
        .with_quick_pretrain(100_000)
        .with_spec(checkpoint={"intervalSteps": 50, "keep": 2})
    )


def step_shown(driver: Any, css: str) -> int:
    text = text_of(driver, css).split("/")[0].strip().replace(",", "")
    return int(text) if text.isdigit() else -1


def test_a_wrong_token_sees_nothing(platform: CarinaUp, driver: Any, shots: Shots) -> None:
    # A job the wrong tokens must not see (suspended: it need not run to be listed).
    platform.client().create(
        NS, make_job("secret-run").with_quick_pretrain(10).with_spec(suspend=True)
    )
    log_in(driver, platform.url, "not-a-token")
    error = until(driver, lambda d: text_of(d, "#login-error"), 30, "the login error")
    assert "401" in error
    assert "refused" in error
    shots.take(driver, "wrong-token")
    assert session_token(driver) is None
    assert not driver.find_elements("id", "jobs-table")
    assert "secret-run" not in driver.page_source

    # A real token for another namespace: the API's 403, and still nothing of `default`.
    log_in(driver, platform.url, OTHER_TOKEN, NS)
    error = until(
        driver,
        lambda d: "403" in text_of(d, "#login-error") and text_of(d, "#login-error"),
        30,
        "the 403",
    )
    assert "may not" in error
    assert session_token(driver) is None
    assert "secret-run" not in driver.page_source

    # Going straight to a page without logging in shows the login page, not the jobs.
    driver.get(f"{platform.url}/console/#/jobs/{NS}")
    until(driver, lambda d: d.find_elements("id", "token"), 30, "the login page")
    assert not driver.find_elements("id", "jobs-table")
    assert "secret-run" not in driver.page_source
    shots.take(driver, "no-token")

    # The right token, in the same tab, does see it: what the others missed was there.
    log_in(driver, platform.url, (platform.state_dir / "token").read_text().strip(), NS)
    row = '#jobs-table tr[data-job="secret-run"]'
    until(driver, lambda d: d.find_elements("css selector", row), 60, "the job, for its owner")
    assert text_of(driver, f"{row} .phase").startswith("Suspended")
    platform.client().delete(NS, "secret-run")


def test_a_user_follows_suspends_resumes_and_deletes_a_job_then_finds_it_in_history(
    platform: CarinaUp, driver: Any, shots: Shots
) -> None:
    client = platform.client()
    name = "console-run"
    client.create(NS, tiny_job(name))
    token = (platform.state_dir / "token").read_text().strip()

    log_in(driver, platform.url, token)
    row = f'#jobs-table tr[data-job="{name}"]'
    until(driver, lambda d: d.find_elements("css selector", row), 60, "the job's row")
    assert session_token(driver) == token
    assert token not in driver.current_url
    assert driver.get_cookies() == []

    # Progress moves in the list without a reload (the watch stream brings it).
    first = until(
        driver,
        lambda d: step_shown(d, f"{row} .steps") > 0 and step_shown(d, f"{row} .steps"),
        180,
        "a first step",
    )
    until(
        driver,
        lambda d: step_shown(d, f"{row} .steps") > first,
        120,
        "the step to move in the list",
    )
    assert text_of(driver, f"{row} .phase") == "Running"
    assert text_of(driver, f"{row} .queue") == "this-machine"
    assert text_of(driver, "#live") == "live"
    shots.take(driver, "jobs")

    # The job's page: progress, charts, log.
    click(driver, "link text", name)
    until(driver, lambda d: text_of(d, "#job-phase") == "Running", 30, "the job's page")
    shown = until(
        driver,
        lambda d: step_shown(d, "#progress-text") > 0 and step_shown(d, "#progress-text"),
        60,
        "progress",
    )
    until(
        driver,
        lambda d: step_shown(d, "#progress-text") > shown,
        120,
        "progress to move on the page",
    )
    until(
        driver,
        lambda d: (
            int(
                d.find_element("css selector", '[data-chart="Loss"]').get_attribute("data-points")
                or 0
            )
            > 1
        ),
        120,
        "the loss chart to have points",
    )
    assert driver.find_elements("css selector", '[data-chart="Loss"] canvas')
    until(
        driver,
        lambda d: '"event": "step"' in text_of(d, "#log") or '"event":"step"' in text_of(d, "#log"),
        120,
        "step lines in the log",
    )
    log_before = text_of(driver, "#log")
    until(driver, lambda d: text_of(d, "#log") != log_before, 120, "the log tail to follow")
    shots.take(driver, "job")

    # Suspend: the workers stop after a checkpoint; the page says so and offers Resume.
    driver.find_element("id", "suspend").click()
    until(driver, lambda d: text_of(d, "#job-phase") == "Suspended", 180, "Suspended")
    assert driver.find_element("id", "resume").is_displayed()
    assert not driver.find_element("id", "suspend").is_displayed()
    assert client.get(NS, name)["spec"]["suspend"] is True
    suspended_at = step_shown(driver, "#progress-text")
    shots.take(driver, "suspended")

    driver.find_element("id", "resume").click()
    until(driver, lambda d: text_of(d, "#job-phase") == "Running", 180, "Running again")
    until(
        driver,
        lambda d: step_shown(d, "#progress-text") > suspended_at,
        240,
        "progress after resuming",
    )
    assert client.get(NS, name)["spec"]["suspend"] is False
    checkpoint = until(
        driver,
        lambda d: d.find_elements("css selector", '#checkpoints-table tr[data-kind="latest"]'),
        120,
        "a checkpoint",
    )
    assert checkpoint
    # Conditions, events and restarts by reason are the API's, as the page shows them.
    status = client.get(NS, name)["status"]
    for condition in status["conditions"]:
        row = f'#conditions tr[data-type="{condition["type"]}"]'
        until(driver, lambda d, row=row: d.find_elements("css selector", row), 30, row)
    reasons = {e["reason"] for e in client.events(NS, name)}
    until(
        driver,
        lambda d: all(r in text_of(d, "#events-table") for r in reasons),
        60,
        f"the events {sorted(reasons)}",
    )
    by_reason = status["restartsByReason"]
    restarts = text_of(driver, "#fact-restarts")
    assert restarts.startswith(f"{status['restarts']} (")
    assert f"preemption {by_reason.get('preemption', 0)}" in restarts
    shots.take(driver, "resumed")

    # Delete takes two clicks; the page then points to the history.
    driver.find_element("id", "delete").click()
    assert text_of(driver, "#delete") == "Click again to delete"
    driver.find_element("id", "delete").click()
    until(driver, lambda d: d.find_elements("id", "deleted"), 180, "the deleted notice")
    wait_gone(client, name)
    shots.take(driver, "deleted")

    driver.find_element("link text", "Find it in the history").click()
    history_row = f'#history-table tr[data-job="{name}"]'
    until(
        driver,
        lambda d: (
            d.find_elements("css selector", history_row)
            or d.find_elements("id", "history-unavailable")
        ),
        60,
        "the history page",
    )
    shots.take(driver, "history")
    assert not driver.find_elements("id", "history-unavailable"), text_of(
        driver, "#history-unavailable"
    )
    assert text_of(driver, f"{history_row} .deleted")
    click(driver, "css selector", f"{history_row} a")
    until(driver, lambda d: d.find_elements("id", "record"), 60, "the history record")
    assert name in text_of(driver, "#record")
    shots.take(driver, "record")

    # Log out: the token is gone from the tab, and the pages ask for it again.
    driver.find_element("id", "logout").click()
    until(driver, lambda d: d.find_elements("id", "token"), 30, "the login page after logging out")
    assert session_token(driver) is None
    driver.get(f"{platform.url}/console/#/jobs/{NS}")
    until(driver, lambda d: d.find_elements("id", "token"), 30, "the login page")
    assert not driver.find_elements("id", "jobs-table")


def wait_gone(client: Any, name: str) -> None:
    from carina.platform.cli.client import ApiError

    def gone() -> bool:
        try:
            client.get(NS, name)
        except ApiError as exc:
            return exc.status == 404
        return False

    wait_for(gone, 180, f"{name} to be deleted")


def test_the_console_logic_behaves_in_the_browser(platform: CarinaUp, driver: Any) -> None:
    """The pure modules, imported by the page itself (same origin, under its CSP)."""
    driver.get(f"{platform.url}/console/")
    until(driver, lambda d: d.find_elements("id", "token"), 30, "the login page")
    result = driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        Promise.all([import("./js/sse.js"), import("./js/describe.js"), import("./js/routes.js")])
          .then(([sse, describe, routes]) => {
            const parser = new sse.SseParser();
            const events = [
              ...parser.push(": watching\\n\\nevent: ADD"),
              ...parser.push('ED\\ndata: {"a":1}\\r'),
              ...parser.push("\\n\\r\\nevent: DELETED\\ndata: x\\ndata: y\\n\\n"),
            ];
            const queued = {
              spec: { queue: "team-q" },
              status: {
                phase: "Queued",
                conditions: [{
                  type: "Admitted", status: "False", reason: "WaitingForQuota",
                  message: "needs 8 GPUs", lastTransitionTime: "2026-01-01T00:00:00Z",
                }],
                progress: { step: 5, totalSteps: 20 },
                restartsByReason: { preemption: 2 }, restarts: 2,
              },
            };
            done({
              events,
              why: describe.whyPending(queued),
              whyFinished: describe.whyPending({ status: { ...queued.status, phase: "Failed" } }),
              whyQueue: describe.whyPending({ status: { queueing: { reason: "WaitingForQuota",
                message: "behind 3 jobs", position: 4 } } }),
              queue: describe.queueOf(queued),
              progress: describe.progressOf(queued),
              restarts: describe.restartsOf(queued),
              columns: describe.toColumns(
                [{ time: 1, value: 2 }, [3, 4], { time: null, value: 5 }]),
              at: [describe.insertionIndex(["a", "c"], "b"), describe.insertionIndex([], "x")],
              memory: describe.formatQuantity("memory", 3 * 2 ** 30),
              gpus: describe.formatQuantity("nvidia.com/gpu", 8),
              route: routes.parseRoute(routes.link.job("team a", "run-1")),
              record: routes.parseRoute("#/history/default/abc-123").page,
              history: routes.link.history("default", { phase: "Failed", name: "" }),
              unknown: routes.parseRoute("#/nowhere").page,
            });
          }, (error) => done({ error: String(error) }));
        """
    )
    assert "error" not in result, result
    assert result["events"] == [
        {"type": "ADDED", "data": '{"a":1}'},
        {"type": "DELETED", "data": "x\ny"},
    ]
    assert result["why"] == "WaitingForQuota: needs 8 GPUs"
    assert result["whyFinished"] == ""
    assert result["whyQueue"] == "WaitingForQuota: behind 3 jobs (position 4)"
    assert result["queue"] == "team-q"
    assert result["progress"] == {"step": 5, "total": 20, "fraction": 0.25, "text": "5 / 20"}
    assert result["restarts"] == {
        "total": 2,
        "application": 0,
        "infrastructure": 0,
        "preemption": 2,
    }
    assert result["columns"] == [[1, 3], [2, 4]]
    assert result["at"] == [1, 0]
    assert result["memory"] == "3.0 GiB"
    assert result["gpus"] == "8"
    assert result["route"] == {"page": "job", "params": {"namespace": "team a", "name": "run-1"}}
    assert result["record"] == "record"
    assert result["history"] == "#/history/default?phase=Failed"
    assert result["unknown"] == "login"


def test_the_console_pages_load_under_their_content_security_policy(
    platform: CarinaUp, driver: Any
) -> None:
    """Nothing the console loads is refused by its own CSP, and nothing comes from elsewhere."""
    token = (platform.state_dir / "token").read_text().strip()
    log_in(driver, platform.url, token)
    until(driver, lambda d: d.find_elements("id", "jobs-table"), 60, "the jobs page")
    pages = {
        "#/queues/default": '.queue[data-queue="this-machine"] table.usage',
        "#/history/default": "#history-table, #history-unavailable",
        f"#/jobs/{NS}": '#jobs-table[data-complete="true"]',
    }
    for page, shows in pages.items():
        driver.get(f"{platform.url}/console/{page}")
        until(driver, lambda d, css=shows: d.find_elements("css selector", css), 60, page)
    entries: list[str] = driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert entries
    assert all(e.startswith(platform.url) for e in entries), entries
    refused = [
        e["message"]
        for e in driver.get_log("browser")
        if "Content Security Policy" in e["message"] or "Refused" in e["message"]
    ]
    assert refused == [], json.dumps(refused, indent=1)


def test_a_job_too_big_for_the_machine_says_why_it_waits(
    platform: CarinaUp, driver: Any, shots: Shots
) -> None:
    client = platform.client()
    name = "too-big"
    client.create(NS, make_job(name).with_quick_pretrain(10).with_spec(resources={"cpu": "100000"}))
    token = (platform.state_dir / "token").read_text().strip()
    log_in(driver, platform.url, token)
    why = f'#jobs-table tr[data-job="{name}"] .why'
    shown = until(driver, lambda d: text_of(d, why), 60, "why the job waits")
    admitted = next(
        c for c in client.get(NS, name)["status"]["conditions"] if c["type"] == "Admitted"
    )
    assert shown == f"{admitted['reason']}: {admitted['message']}"
    assert shown.startswith("ExceedsMaxQuota: ")
    shots.take(driver, "why-pending")

    click(driver, "id", "nav-queues")
    queue = '.queue[data-queue="this-machine"]'
    until(driver, lambda d: d.find_elements("css selector", f"{queue} table.usage"), 60, "queues")
    assert text_of(driver, f'{queue} tr[data-resource="cpu"]')
    waiting = f'{queue} tr[data-job="{NS}/{name}"]'
    until(driver, lambda d: "ExceedsMaxQuota" in text_of(d, waiting), 60, "the job among pending")
    shots.take(driver, "queues")
    client.delete(NS, name)
