"""The README's screenshots of the demo (``make screenshots``, i.e.
``manage.py demo --screenshots docs/screenshots``): the site in a thread of this process,
headless Chromium, one PNG per view."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

from . import browser

WIDTH = 1280
QUERY = "Warum stiegen 1973 die Ölpreise so stark?"


def _open(driver, url: str, selector: str) -> None:
    from selenium.webdriver.common.by import By

    driver.set_window_size(WIDTH, 900)
    driver.get(url)
    browser.wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, selector),
                     message=f"{selector} not on {url}")


def take(base_url: str, out_dir: Path, username: str, password: str) -> list[Path]:
    from selenium.webdriver.common.by import By

    out_dir.mkdir(parents=True, exist_ok=True)
    shots: list[Path] = []
    driver = browser.start_driver(WIDTH, 900)

    def shot(name: str, full_page: bool = False) -> None:
        path = out_dir / f"{name}.png"
        if full_page:
            browser.full_page_screenshot(driver, path, WIDTH)
        else:
            driver.save_screenshot(str(path))
        shots.append(path)

    try:
        _open(driver, f"{base_url}/", "#examples")
        shot("home")
        _open(driver, f"{base_url}/?{urlencode({'q': QUERY})}", "#summary")
        shot("search", full_page=True)
        _open(driver, f"{base_url}/?{urlencode({'q': QUERY})}", "#summary")
        for summary in driver.find_elements(By.CSS_SELECTOR, "details.why summary")[:2]:
            summary.click()
        driver.set_window_size(WIDTH, 1150)
        driver.execute_script("window.scrollTo(0, 0)")
        shot("why")
        _open(driver, f"{base_url}/?{urlencode({'q': QUERY, 'language': 'en'})}", "#summary")
        shot("filter")
        _open(driver, f"{base_url}/?{urlencode({'q': 'qwxz blorft vrummel'})}", "#summary")
        shot("no-match")
        browser.log_in(driver, base_url, username, password, next_path="/status/")
        _open(driver, f"{base_url}/status/", "#reindex-button")
        driver.find_element(By.ID, "force").click()  # re-embed everything: progress to show
        driver.find_element(By.ID, "reindex-button").click()

        def article_progress() -> float:
            done, objects = (
                int(browser.text(driver, f'.model-progress[data-model="demo.Article"] .{key}'))
                for key in ("done", "objects")
            )
            return done / max(objects, 1)

        browser.wait_for(lambda: 0.2 <= article_progress() <= 0.8, timeout=600, poll=0.5,
                         message="no progress to show")
        shot("status-progress")
        browser.wait_for(
            lambda: browser.text(driver, "#run-label") in ("finished", "failed"),
            timeout=600, message="the reindex did not finish",
        )
        shot("status")
        _open(driver, f"{base_url}/admin/demo/article/?{urlencode({'q': 'Dampfmaschine'})}",
              "#result_list")
        shot("admin")
    finally:
        browser.stop_driver(driver)
    return shots
