"""Screenshots of each page of the ops console, for docs/admin.md.

    python -m tests.proxy.admin.take_screenshots docs/images

Starts the fake upstream and a gateway with the console in a temporary directory, sends
traffic for two tenants and labels most of it through /v1/feedback (as apps do), then logs in
with headless chromium (as the browser tests do) and saves ``admin-<page>.png`` for the login
form, the tenants, the review queue, the policy simulator, refit and promote, and the API
documentation. Rerun it after changing a page.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
from pathlib import Path

import httpx
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from tests.support.admin_console import ADMIN_ENV, ADMIN_KEY, bearer, serve_console
from tests.support.browser import chromium, log_in, missing, wait_for, wait_for_text
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway import TENANT_KEYS
from tests.support.loopback import serve_in_thread

QUESTIONS = [
    ("What is the capital of Australia?", "Canberra"),
    ("Which element has the chemical symbol W?", "Tungsten"),
    ("In which year did the Berlin Wall fall?", "1989"),
    ("What is the longest river in Europe?", "The Volga"),
    ("Who wrote 'The Master and Margarita'?", "Mikhail Bulgakov"),
    ("What is the boiling point of ethanol at sea level?", "About 78 °C"),
    ("Which planet has the most known moons?", "Saturn"),
    ("What is the smallest prime number greater than 100?", "101"),
]


def _ask(url: str, tenant: str, question: str, answer: str, p: float) -> str:
    directive = json.dumps({"fake": {"content": answer, "logprobs": [math.log(p)]}})
    response = httpx.post(
        f"{url}/v1/chat/completions", headers=bearer(TENANT_KEYS[tenant]), timeout=30,
        json={"model": "fake", "messages": [{"role": "system", "content": directive},
                                            {"role": "user", "content": question}]})
    response.raise_for_status()
    decision_id: str = response.json()["basguard"]["id"]
    return decision_id


def traffic(url: str) -> None:
    """Labelled decisions across the confidence range for two tenants, and a few withheld
    answers waiting for review."""
    # Skewed: an overconfident model (correct with probability p³ when it says p), so that a
    # refit has something to correct.
    for tenant, count, skew in (("enforcer", 80, 3.0), ("annotator", 40, 1.2)):
        for i in range(count):
            p = 0.04 + 0.92 * ((i * 37) % count) / (count - 1)
            question, answer = QUESTIONS[i % len(QUESTIONS)]
            decision_id = _ask(url, tenant, question, answer, p)
            correct = (i * 7919) % 100 < 100 * p ** skew
            httpx.post(f"{url}/v1/feedback", headers=bearer(TENANT_KEYS[tenant]), timeout=30,
                       json={"id": decision_id, "correct": correct}).raise_for_status()
    for (question, answer), p in zip(QUESTIONS[:5], (0.47, 0.31, 0.42, 0.12, 0.38),
                                     strict=True):
        _ask(url, "enforcer", question, answer, p)


def shoot(driver: WebDriver, path: Path) -> None:
    """The whole page (up to 2400 pixels tall) at a laptop's width."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1366, min(max(int(height) + 40, 700), 2400))
    driver.save_screenshot(str(path))
    driver.set_window_size(1366, 900)
    print(f"wrote {path}")


def pages(driver: WebDriver, url: str, out: Path) -> None:
    driver.get(f"{url}/admin/login")
    wait_for(driver, "input#key")
    shoot(driver, out / "admin-login.png")
    log_in(driver, url, ADMIN_KEY)
    wait_for(driver, "svg.reliability")
    shoot(driver, out / "admin-tenants.png")
    driver.get(f"{url}/admin/review?tenant=enforcer")
    wait_for(driver, "pre.answer")
    shoot(driver, out / "admin-review.png")
    driver.get(f"{url}/admin/simulator?tenant=enforcer")
    wait_for(driver, "#simulated-row")
    slider = driver.find_element(By.ID, "threshold")
    slider.send_keys(*[Keys.ARROW_RIGHT] * 1)
    wait_for(driver, "#simulated-row")
    shoot(driver, out / "admin-simulator.png")
    driver.get(f"{url}/admin/calibrators")
    Select(driver.find_element(By.ID, "tenant")).select_by_visible_text("enforcer")
    Select(driver.find_element(By.ID, "model")).select_by_visible_text("fake")
    driver.find_element(By.CSS_SELECTOR, "form.controls button").click()
    wait_for(driver, "code.candidate-version")
    shoot(driver, out / "admin-refit.png")
    driver.find_element(By.ID, "confirm").send_keys(Keys.SPACE)
    driver.find_element(By.CSS_SELECTOR, "form.promote button").click()
    wait_for_text(driver, "p.message", "Promoted")
    shoot(driver, out / "admin-promoted.png")
    driver.get(f"{url}/admin/docs")
    wait_for_text(driver, "#swagger-ui", "/api/review/label")
    shoot(driver, out / "admin-api.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="directory for the PNGs (docs/images)")
    args = parser.parse_args()
    reason = missing()
    if reason is not None:
        raise SystemExit(reason)
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ[ADMIN_ENV] = ADMIN_KEY
    os.environ.setdefault("FAKE_UPSTREAM_KEY", "sk-upstream-secret-0123456789")
    with tempfile.TemporaryDirectory(prefix="basguard-screens-") as directory, \
            serve_in_thread(FakeUpstream().app()) as upstream, \
            serve_console(Path(directory), upstream) as url:
        traffic(url)
        with chromium(Path(directory) / "profile") as driver:
            pages(driver, url, args.out)


if __name__ == "__main__":
    main()
