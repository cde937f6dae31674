"""The console in a real browser (headless chromium through Selenium): log in, label from the
queue with the keyboard and see the labels in the store and the metrics, move the simulator,
refit and promote a calibrator, read the API documentation."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from calibrators.artifact import load_artifact
from tests.support.admin_console import ADMIN_KEY, CALIBRATOR_FILE, ask, labelled_traffic
from tests.support.browser import chromium, log_in, missing, wait_for, wait_for_text
from tests.support.metrics import scrape


@pytest.fixture
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    reason = missing()
    if reason is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"the browser tests need chromium under CI: {reason}")
        pytest.skip(reason)
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as browser:
        yield browser


def labels(store: Path) -> dict[str, int | None]:
    with sqlite3.connect(store) as db:
        return dict(db.execute("SELECT id, correct FROM decisions").fetchall())


def test_a_reviewer_logs_in_and_labels_the_queue_with_the_keyboard(
        console: str, console_dir: Path, driver: WebDriver) -> None:
    first = ask(console, "enforcer", "tallest mountain?", content="Everest", logprob=-0.75)
    second = ask(console, "enforcer", "deepest lake?", content="Tanganyika", logprob=-2.3)
    third = ask(console, "enforcer", "longest river?", content="Amazon", logprob=-3.0)
    log_in(driver, console, ADMIN_KEY, page="/admin/review")
    assert driver.current_url.endswith("/admin/review")  # back where the login was asked
    wait_for_text(driver, "pre.answer", "Everest")  # closest to the threshold first
    assert driver.find_element(By.CSS_SELECTOR, "code.decision-id").text == first.id
    driver.find_element(By.TAG_NAME, "body").send_keys("c")
    wait_for_text(driver, "p.message", "Labelled correct.")
    wait_for_text(driver, "pre.answer", "Tanganyika")
    driver.find_element(By.TAG_NAME, "body").send_keys("w")
    wait_for_text(driver, "p.message", "Labelled wrong.")
    wait_for_text(driver, "pre.answer", "Amazon")
    driver.find_element(By.TAG_NAME, "body").send_keys("s")  # skipped: stays unlabelled
    wait_for(driver, "p.empty-queue")
    assert not [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    stored = labels(console_dir / "decisions.sqlite3")
    assert (stored[first.id], stored[second.id], stored[third.id]) == (1, 0, None)
    samples = scrape(console)
    pair = (("model", "fake"), ("outcome", "abstained_correct"), ("tenant", "enforcer"))
    assert samples[("basguard_feedback_decisions", pair)] == 1
    pair = (("model", "fake"), ("outcome", "abstained_wrong"), ("tenant", "enforcer"))
    assert samples[("basguard_feedback_decisions", pair)] == 1


@pytest.mark.slow  # 30 labelled requests first: over 5 s on the 2-core machine
def test_the_simulator_follows_the_threshold_and_the_costs(
        console: str, driver: WebDriver) -> None:
    labelled_traffic(console, "enforcer", 30)
    log_in(driver, console, ADMIN_KEY, page="/admin/simulator?tenant=enforcer")
    wait_for(driver, "#simulated-row")
    configured = driver.find_element(By.CSS_SELECTOR, "#simulated-row td.coverage").text
    slider = driver.find_element(By.ID, "threshold")
    slider.send_keys(Keys.HOME)  # threshold 0: answer everything
    wait_for_text(driver, "#simulated-row th", "t=0")
    assert driver.find_element(By.CSS_SELECTOR, "#simulated-row td.coverage").text == "100.0 %"
    assert configured != "100.0 %"
    assert driver.find_element(By.ID, "threshold-value").text == "0.00"
    wrong = driver.find_element(By.ID, "wrong_answer_cost")
    wrong.send_keys("4", Keys.TAB)  # a change: the threshold now follows from the costs
    wait_for_text(driver, "#simulated-row th", "costs 4/0")
    expected = (4 - 0) / (1 + 4)
    cells = driver.find_elements(By.CSS_SELECTOR, "#simulated-row td")
    assert cells[0].text == f"{expected:.3f}"
    coverage = sum(0.05 + 0.9 * i / 29 >= expected for i in range(30)) / 30
    assert driver.find_element(By.CSS_SELECTOR, "#simulated-row td.coverage").text == \
        f"{100 * coverage:.1f} %"
    link = driver.find_element(By.CSS_SELECTOR, "a.download").get_attribute("href")
    assert link is not None and "/admin/api/simulate/card?" in link
    assert "wrong_answer_cost=4" in link
    assert driver.find_elements(By.CSS_SELECTOR, "svg.curve line.mark")


def test_an_operator_refits_and_promotes_a_calibrator(
        console: str, console_dir: Path, driver: WebDriver) -> None:
    labelled_traffic(console, "enforcer", 40)
    serving = load_artifact(console_dir / CALIBRATOR_FILE).version
    log_in(driver, console, ADMIN_KEY, page="/admin/calibrators")
    Select(driver.find_element(By.ID, "tenant")).select_by_visible_text("enforcer")
    Select(driver.find_element(By.ID, "model")).select_by_visible_text("fake")
    driver.find_element(By.CSS_SELECTOR, "form.controls button").click()
    wait_for(driver, "code.candidate-version")
    candidate = driver.find_element(By.CSS_SELECTOR, "code.candidate-version").text
    assert driver.find_element(By.CSS_SELECTOR, "code.serving-version").text == serving
    assert len(driver.find_elements(By.CSS_SELECTOR, ".figures-pair svg")) == 2
    promote = driver.find_element(By.CSS_SELECTOR, "form.promote button")
    promote.click()  # not confirmed: the browser keeps the form
    assert driver.find_elements(By.CSS_SELECTOR, "form.promote")
    assert load_artifact(console_dir / CALIBRATOR_FILE).version == serving
    driver.find_element(By.ID, "confirm").send_keys(Keys.SPACE)
    driver.find_element(By.CSS_SELECTOR, "form.promote button").click()
    wait_for_text(driver, "p.message", "Promoted")
    assert load_artifact(console_dir / CALIBRATOR_FILE).version == candidate
    history = driver.find_element(By.CSS_SELECTOR, "table.history tbody").text
    assert "admin (key" in history and candidate in history
    driver.get(f"{console}/admin/tenants")
    wait_for(driver, "code.version")
    versions = [v.text for v in driver.find_elements(By.CSS_SELECTOR, "code.version")]
    assert candidate in versions


def test_the_api_documentation_renders_from_the_vendored_swagger_ui(
        console: str, driver: WebDriver) -> None:
    log_in(driver, console, ADMIN_KEY)
    driver.get(f"{console}/admin/docs")
    wait_for_text(driver, "#swagger-ui", "/api/review/label")
    assert "basguard ops console" in driver.find_element(By.ID, "swagger-ui").text
    # Nothing the page loaded came from elsewhere, and nothing broke the page's policy.
    for entry in driver.get_log("browser"):
        assert "Content Security Policy" not in entry["message"], entry
    resources = driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)")
    assert resources and all(name.startswith(console) for name in resources)
