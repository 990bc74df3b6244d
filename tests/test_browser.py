"""End to end in headless Chromium: the demo's search page, its "why" panel, filters and pages,
the admin's search box and relevance sort, the status page's reindex button through a real
Celery worker, and a screenshot.

The set-up installs Debian's ``chromium`` and ``chromium-driver`` with apt when they are absent
and the tests run as root (example_project/demo/browser.py); the tests skip, saying why, only
where that cannot be done. The site runs in a thread of this process on the test database, over
the demo's XQuAD slice indexed by the worker.
"""

from __future__ import annotations

import struct
import time

import pytest
from django.contrib.auth import get_user_model
from django.db import connection, connections

from example_project.demo import browser
from example_project.demo.loading import SLICE_PATH, load_slice, read_jsonl
from example_project.demo.models import Article, Topic
from semantic_search import conf, indexing
from semantic_search.embedders import get_embedder
from semantic_search.models import IndexState, SearchEntry

# django_db makes pytest-django set up the test database (a session whose tests ask for none
# would run on the configured one). The tests themselves only read; the site's threads see the
# module's committed data. The reindex test writes, so it is transactional, and last (its
# teardown empties the tables).
pytestmark = [pytest.mark.worker, pytest.mark.django_db]

STAFF = ("browser-staff", "browser-staff-password")
GERMAN_QUERY = "Warum stiegen 1973 die Ölpreise so stark?"
OIL_CRISIS = "1973 oil crisis"


def _article_entries():
    return SearchEntry.objects.filter(content_type__app_label="demo", content_type__model="article")


@pytest.fixture(scope="module")
def chromium():
    reason = browser.ensure_chromium()
    if reason:
        pytest.skip(f"no headless Chromium: {reason}")


@pytest.fixture(scope="module")
def site(chromium, celery_worker_process, django_db_setup, django_db_blocker):
    """The demo corpus indexed by the worker, a staff user, and the site on a free port."""
    name = connection.settings_dict["NAME"]
    if not name.startswith("test_") and name != connection.settings_dict["TEST"].get("NAME"):
        pytest.fail(f"refusing to load and delete the demo corpus in {name}: not a test database")
    with django_db_blocker.unblock():
        load_slice()  # what `manage.py demo` loads; the saves reach the worker
        user = get_user_model().objects.create_user(STAFF[0], password=STAFF[1], is_staff=True,
                                                    is_superuser=True)
        slice_ids = [row["external_id"] for row in read_jsonl(SLICE_PATH)]
        pks = [str(pk) for pk in Article.objects.filter(external_id__in=slice_ids)
               .values_list("pk", flat=True)]
        indexed = _article_entries().filter(object_id__in=pks, state=IndexState.INDEXED)
        browser.wait_for(lambda: indexed.count() == len(pks), timeout=600, poll=1,
                         message="the worker did not index the demo corpus")
        for spec in conf.embedder_specs():  # load the query models before the first page
            get_embedder(spec.name).encode_queries(["warm-up"])
        with browser.live_server() as url:
            yield url
        user.delete()
        Article.objects.all().delete()
        Topic.objects.all().delete()
        # What a worker does with deleted objects' entries, without waiting for one.
        indexing.index_entries(list(_article_entries().values_list("id", flat=True)))
        connections.close_all()


@pytest.fixture(scope="module")
def driver(site):
    chrome = browser.start_driver()
    chrome.implicitly_wait(0)
    yield chrome
    browser.stop_driver(chrome)


def by_css(driver, selector):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def search_for(driver, site, query: str) -> None:
    from selenium.webdriver.common.keys import Keys

    driver.get(site + "/")
    box = by_css(driver, "#q")[0]
    box.clear()
    box.send_keys(query, Keys.ENTER)
    browser.wait_for(lambda: by_css(driver, "#summary"), message="no results page")


def results(driver) -> list[dict]:
    return [
        {"id": item.get_attribute("data-external-id"),
         "language": item.get_attribute("data-language"),
         "topic": item.find_element("css selector", ".topic").get_attribute("data-topic")}
        for item in by_css(driver, "article.result")
    ]


def test_german_query_shows_relevant_english_and_german_results(driver, site):
    search_for(driver, site, GERMAN_QUERY)
    found = results(driver)
    assert len(found) == 10
    on_topic = {(r["language"]) for r in found if r["topic"] == OIL_CRISIS}
    assert {"de", "en"} <= on_topic, found
    assert found[0]["topic"] == OIL_CRISIS
    assert by_css(driver, "#query-language")[0].text.startswith("German")
    assert "index" in by_css(driver, "#detection")[0].text
    assert "vector:multilingual" in by_css(driver, "#route-label")[0].text
    assert by_css(driver, "#server-ms")[0].text.endswith(" ms")
    snippets = [s.text for s in by_css(driver, ".snippet")]
    assert all(snippets) and by_css(driver, ".snippet b"), "snippets with the query's words"


def test_why_shows_rank_and_score_per_arm(driver, site):
    search_for(driver, site, GERMAN_QUERY)
    first = by_css(driver, "article.result details.why")[0]
    assert not by_css(first, "table")[0].is_displayed()
    by_css(first, "summary")[0].click()
    assert first.get_attribute("open") is not None
    rows = {
        row.find_element("css selector", "code").text: row.text
        for row in by_css(first, "tbody tr")
    }
    assert {"lexical", "vector:multilingual"} <= set(rows), rows
    assert all(cell.text.isdigit() for cell in by_css(first, "tbody tr.hit td:nth-child(2)"))
    by_css(driver, "#toggle-why")[0].click()  # show why for all
    assert all(d.get_attribute("open") is not None for d in by_css(driver, "details.why"))


def test_language_filter_composes_with_the_search_and_counts_show(driver, site):
    search_for(driver, site, GERMAN_QUERY)
    counts = {a.get_attribute("data-value"): a.find_element("xpath", "..").text
              for a in by_css(driver, "#language-facet a")}
    assert counts["en"].split()[-1].isdigit() and int(counts["en"].split()[-1]) > 0
    by_css(driver, '#language-facet a[data-value="en"]')[0].click()
    browser.wait_for(lambda: "language=en" in driver.current_url)
    found = results(driver)
    assert found and {r["language"] for r in found} == {"en"}
    assert found[0]["topic"] == OIL_CRISIS  # a German question, the English answer first
    assert "English" in by_css(driver, "#summary")[0].text
    by_css(driver, '#topic-facet a[data-value="1973 oil crisis"]')[0].click()
    browser.wait_for(lambda: "topic=1973" in driver.current_url)
    found = results(driver)
    assert found and all(r["topic"] == OIL_CRISIS and r["language"] == "en" for r in found)


def test_pages_forward(driver, site):
    search_for(driver, site, GERMAN_QUERY)
    first_page = [r["id"] for r in results(driver)]
    assert by_css(driver, "#page-number")[0].text.startswith("page 1 of ")
    by_css(driver, "#pager a[rel=next]")[0].click()
    browser.wait_for(lambda: by_css(driver, "#page-number")
                     and by_css(driver, "#page-number")[0].text.startswith("page 2 of "))
    second_page = [r["id"] for r in results(driver)]
    assert second_page and not set(first_page) & set(second_page)


def test_examples_cross_lingual_short_and_no_good_match(driver, site):
    driver.get(site + "/")
    links = {a.text: a.get_attribute("href") for a in by_css(driver, "#examples a")}
    assert len(links) >= 6
    driver.get(links["qwxz blorft vrummel"])
    assert by_css(driver, "#no-results"), "no good match: no results"
    assert by_css(driver, "#summary")[0].text.startswith("0 matches")
    driver.get(links["Dampfmaschine"])
    found = results(driver)
    assert found[0]["topic"] == "Steam engine"
    assert by_css(driver, "#query-language")[0].text.startswith("German")


def test_admin_search_box_and_relevance_sort(driver, site):
    from selenium.webdriver.common.keys import Keys

    browser.log_in(driver, site, *STAFF, next_path="/admin/demo/article/")
    browser.wait_for(lambda: by_css(driver, "#searchbar"), message="not logged in")
    by_css(driver, "#searchbar")[0].send_keys("Dampfmaschine", Keys.ENTER)
    browser.wait_for(lambda: "q=Dampfmaschine" in driver.current_url)
    header = by_css(driver, "th.column-search_relevance")[0]
    assert "sorted" in header.get_attribute("class")  # ranked by relevance, marked as the sort

    def scores():
        return [float(td.text) for td in by_css(driver, "td.field-search_relevance")]

    ranked = scores()
    assert ranked and ranked == sorted(ranked, reverse=True)
    titles = [td.text for td in by_css(driver, "th.field-title, td.field-title")]
    assert titles[0] == "Steam engine"
    by_css(driver, "th.column-title div.text a")[0].click()  # sort by another column
    browser.wait_for(lambda: "o=" in driver.current_url)
    by_css(driver, "th.column-search_relevance div.text a")[0].click()  # then by relevance again
    browser.wait_for(lambda: by_css(driver, "th.column-search_relevance.sorted"))
    resorted = scores()
    assert resorted == sorted(resorted, reverse=True)  # best first
    assert "o=" in driver.current_url  # sorted by the user's click, not by default


def test_screenshot_is_not_empty(driver, site, tmp_path):
    search_for(driver, site, GERMAN_QUERY)
    by_css(driver, "article.result details.why summary")[0].click()
    path = tmp_path / "search.png"
    browser.full_page_screenshot(driver, path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 1000 and height >= 600
    from PIL import Image

    with Image.open(path) as image:
        colors = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colors is None or len(colors) > 50, "a blank page"


@pytest.mark.django_db(transaction=True)
def test_reindex_from_the_status_page_through_the_worker(driver, site):
    # bulk_create sends no signals: the status page shows them missing.
    added = Article.objects.bulk_create([
        Article(title="Browser test", body="Ein Absatz über Dampfmaschinen.", language="de"),
        Article(title="Browser test", body="A paragraph about steam engines.", language="en"),
    ])
    try:
        browser.log_in(driver, site, *STAFF, next_path="/status/")
        driver.get(site + "/status/")
        row = 'tr[data-model="demo.Article"][data-embedder="multilingual"]'
        assert int(by_css(driver, f'{row} td[data-field="missing"]')[0].text) >= 2
        by_css(driver, "#reindex-button")[0].click()
        started = time.monotonic()
        browser.wait_for(
            lambda: browser.text(driver, "#run-label") in ("finished", "failed"),
            timeout=300, message="the reindex did not finish",
        )
        log = browser.text(driver, "#run-log")
        assert browser.text(driver, "#run-label") == "finished", log
        assert "objects sent to the workers" in log
        assert browser.text(driver, f'{row} td[data-field="missing"]') == "0"
        assert browser.text(driver, f'{row} td[data-field="pending"]') == "0"
        print(f"reindex through the worker: {time.monotonic() - started:.1f} s")
        states = set(_article_entries().filter(
            object_id__in=[str(a.pk) for a in added]).values_list("state", flat=True))
        assert states == {IndexState.INDEXED}
    finally:
        Article.objects.filter(pk__in=[a.pk for a in added]).delete()
