"""Headless Chromium for the browser tests (tests/test_browser.py) and the screenshots
(``manage.py demo --screenshots``): Debian's ``chromium`` and ``chromium-driver`` (installed
with apt when absent and running as root), driven by Selenium.

``ensure_chromium()`` returns None when the browser is ready, else the reason it cannot be
(the tests skip with that reason).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
APT_PACKAGES = ("chromium", "chromium-driver")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
)
_apt_tried: list[str | None] = []


def _installed() -> bool:
    return CHROMIUM.exists() and CHROMEDRIVER.exists()


def _apt_install() -> str | None:
    """Install the packages with apt; None on success, else why not."""
    if not shutil.which("apt-get"):
        return "Chromium is not installed and this system has no apt-get to install it"
    if os.geteuid() != 0:
        return (
            "Chromium is not installed and installing it needs root: "
            "run `sudo apt-get install chromium chromium-driver`"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *APT_PACKAGES],
    ):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            return f"`{' '.join(command)}` failed: {' / '.join(tail)}"
    return None if _installed() else "apt installed the packages but no /usr/bin/chromium"


def ensure_chromium() -> str | None:
    """None when Chromium, its driver and Selenium are usable, else the reason."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    if _installed():
        return None
    if not _apt_tried:  # try once per process
        _apt_tried.append(_apt_install())
    return _apt_tried[0]


def ensure_cjk_font() -> str | None:
    """For the screenshots: a font with Chinese characters (Debian's ``fonts-wqy-zenhei``),
    installed with apt when none is there; None when there is one, else why not."""
    listed = subprocess.run(["fc-list", ":lang=zh"], capture_output=True, text=True) \
        if shutil.which("fc-list") else None
    if listed is not None and listed.stdout.strip():
        return None
    if not shutil.which("apt-get") or os.geteuid() != 0:
        return "no font with Chinese characters (apt-get install fonts-wqy-zenhei)"
    done = subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "fonts-wqy-zenhei"],
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, capture_output=True, text=True,
        timeout=900,
    )
    return None if done.returncode == 0 else f"fonts-wqy-zenhei: {done.stderr.strip()[-200:]}"


def start_driver(width: int = 1280, height: int = 900):
    """A headless Chromium with a fresh profile; ``driver.profile_dir`` is removed by
    ``stop_driver``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.profile_dir = profile
    driver.set_page_load_timeout(120)
    return driver


def stop_driver(driver) -> None:
    try:
        driver.quit()
    finally:
        shutil.rmtree(driver.profile_dir, ignore_errors=True)


def full_page_screenshot(driver, path: Path, width: int = 1280) -> None:
    """A PNG of the whole page (the window is grown to the document's height first)."""
    height = driver.execute_script(
        "return Math.max(document.body.scrollHeight, document.documentElement.scrollHeight)"
    )
    driver.set_window_size(width, min(max(int(height) + 40, 600), 4000))
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))


@contextmanager
def live_server() -> Iterator[str]:
    """This process's Django site on a free port of 127.0.0.1 in a thread (static files
    included), on the configured database; yields its base URL."""
    from django.contrib.staticfiles.handlers import StaticFilesHandler
    from django.test.testcases import LiveServerThread

    thread = LiveServerThread("127.0.0.1", StaticFilesHandler, port=0)
    thread.daemon = True
    thread.start()
    thread.is_ready.wait()
    if thread.error:
        raise thread.error
    try:
        yield f"http://127.0.0.1:{thread.port}"
    finally:
        thread.terminate()


def wait_for(condition, timeout: float = 60, poll: float = 0.25, message: str = ""):
    """Poll ``condition()`` until it returns something truthy; returns it."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(message or f"condition not met in {timeout} s")
        time.sleep(poll)


def log_in(driver, base_url: str, username: str, password: str, next_path: str = "/") -> None:
    """Through the admin's login form (unless logged in already), then open ``next_path``."""
    from selenium.webdriver.common.by import By

    driver.get(f"{base_url}/admin/login/?next={next_path}")
    if driver.find_elements(By.ID, "id_username"):
        driver.find_element(By.ID, "id_username").send_keys(username)
        driver.find_element(By.ID, "id_password").send_keys(password)
        driver.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
        wait_for(lambda: "/admin/login/" not in driver.current_url, message="login failed")
    driver.get(f"{base_url}{next_path}")


def text(driver, selector: str) -> str | None:
    """The text of the first element matching ``selector`` (None if there is none), read in
    one script call, so a page that re-renders it meanwhile cannot leave a stale reference."""
    return driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.textContent.trim() : null",
        selector,
    )
