"""Debian's chromium, headless, driven by Selenium through Debian's chromedriver.

Both binaries come from the system (``.ci/system-packages`` installs them); Selenium is given
their paths, so its own manager never looks for, or downloads, a browser or a driver.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT_SECONDS = 60.0
"""The longest a page may take to show what a step waits for (a loaded 2-core machine)."""


def missing() -> str | None:
    """Why no browser can be started here, or None."""
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not (binary.is_file() and os.access(binary, os.X_OK)):
            return f"{binary} is not installed (.ci/system-packages installs it)"
    return None


@contextmanager
def chromium(profile: Path, *, width: int = 1366, height: int = 900) -> Iterator[WebDriver]:
    """A headless chromium with a fresh profile in ``profile``, a laptop's window size."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                 f"--window-size={width},{height}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options,
                              service=Service(executable_path=str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver: WebDriver, css: str) -> None:
    """Until an element matching ``css`` is on the page."""
    WebDriverWait(driver, WAIT_SECONDS).until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css)))


def wait_for_text(driver: WebDriver, css: str, text: str) -> None:
    """Until the element matching ``css`` shows ``text``."""
    WebDriverWait(driver, WAIT_SECONDS).until(
        expected_conditions.text_to_be_present_in_element((By.CSS_SELECTOR, css), text))


def log_in(driver: WebDriver, url: str, key: str, page: str = "/admin/tenants") -> None:
    """Open ``page``, be sent to the login form, enter the key with the keyboard."""
    driver.get(f"{url}{page}")
    wait_for(driver, "input#key")
    field = driver.find_element(By.ID, "key")
    field.send_keys(key)
    field.submit()
    wait_for(driver, "form.logout")
