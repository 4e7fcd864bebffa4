"""The review page in a real headless chromium, driven by the keyboard only: decisions reach RUN/review/,
survive a reload, and survive the server being killed mid-review (SIGKILL of a real `bertfit review`).

Needs chromium, chromedriver and selenium (scripts/install-browser.sh). Set BERTFIT_SCREENSHOT=path.png to keep the
screenshot of the page (docs/review.png is one).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from review_run import copy_run, make_review_run
from test_page import browser  # noqa: F401  (the chromium fixture)

from conftest import LiveServer
from launch import _env, _free_port


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, tiny_model_dir, ag_news_rows):
    return make_review_run(tmp_path_factory.mktemp("review-browser"), tiny_model_dir, ag_news_rows)


def press(browser, *keys: str) -> None:  # noqa: F811
    from selenium.webdriver.common.action_chains import ActionChains

    for key in keys:
        ActionChains(browser).send_keys(key).perform()


def wait_for(browser, element: str, text: str, seconds: float = 20) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, seconds).until(lambda b: text in b.find_element(By.ID, element).text,
                                          f"#{element} never showed {text!r}")


def shown_item(browser) -> str:  # noqa: F811
    from selenium.webdriver.common.by import By

    return browser.find_element(By.ID, "card").get_attribute("data-item")


def test_keyboard_review_is_saved_and_survives_a_reload(browser, base_run, tmp_path):  # noqa: F811
    from selenium.webdriver.common.keys import Keys

    from bertfit.deploy.review import ReviewModel, create_review_app
    from bertfit.deploy.review_sources import open_review
    from bertfit.deploy.serve import ServeSettings

    run, suggestions = copy_run(base_run, tmp_path)
    state = open_review(run, suggestions)
    labels, keys = state.labels, {label: str(k + 1) for k, label in enumerate(state.labels)}
    first_issue = state.items[state.order["audit"][0]]
    fixed = next(label for label in labels if label != first_issue["given"])
    texts = state.order["label"][:3]
    with LiveServer(create_review_app(state, ServeSettings(), ReviewModel(run), run.name)) as live:
        browser.get(live.url + "/")
        wait_for(browser, "counts", "audit: 0 of")
        assert shown_item(browser) == first_issue["id"]
        press(browser, keys[fixed], Keys.ENTER)  # fix the audit row
        wait_for(browser, "counts", "audit: 1 of")
        wait_for(browser, "saved", f"saved: {fixed}")
        press(browser, Keys.TAB)
        wait_for(browser, "counts", "label: 0 of 5")
        assert shown_item(browser) == texts[0]
        guess = state.items[texts[0]]["prefill"]
        press(browser, Keys.ENTER)  # the model's guess
        wait_for(browser, "counts", "label: 1 of 5")
        press(browser, keys[labels[0]], Keys.ENTER, keys[labels[1]], Keys.ENTER)
        wait_for(browser, "counts", "label: 3 of 5")
        press(browser, "u")  # take the third back, label it again
        wait_for(browser, "saved", f"undone: {texts[2]}")
        assert shown_item(browser) == texts[2]
        press(browser, keys[labels[3]], Keys.ENTER)
        wait_for(browser, "counts", "label: 3 of 5")
        wait_for(browser, "saved", f"saved: {labels[3]}")
        if os.environ.get("BERTFIT_SCREENSHOT"):
            press(browser, Keys.TAB)
            wait_for(browser, "counts", "audit: 1 of")
            time.sleep(1)  # the explanation arrives after the item
            assert browser.save_screenshot(os.environ["BERTFIT_SCREENSHOT"])
        browser.refresh()  # a reload shows where the review stands
        wait_for(browser, "counts", "audit: 1 of")
        press(browser, Keys.TAB)
        wait_for(browser, "counts", "label: 3 of 5 decided · 0 skipped")
        assert shown_item(browser) == state.order["label"][3]
    reopened = open_review(run)  # the files alone
    assert reopened.labelled("audit") == {first_issue["id"]: fixed}
    assert reopened.labelled("label") == {texts[0]: guess, texts[1]: labels[0], texts[2]: labels[3]}
    assert (run / "review" / "queue.json").is_file()


def start_review(run, suggestions, port: int) -> subprocess.Popen:
    import httpx

    child = subprocess.Popen([sys.executable, "-m", "bertfit", "review", str(run), "--suggestions", str(suggestions),
                              "--port", str(port), "--no-explain", "--quiet"], env=_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert child.poll() is None, child.stderr.read()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return child
        except httpx.TransportError:
            time.sleep(0.2)
    child.kill()
    raise AssertionError("bertfit review did not start")


def test_nothing_is_lost_when_the_server_is_killed(browser, base_run, tmp_path):  # noqa: F811
    from selenium.webdriver.common.keys import Keys

    from bertfit.deploy.review_sources import open_review

    run, suggestions = copy_run(base_run, tmp_path)
    port = _free_port()
    child = start_review(run, suggestions, port)
    try:
        browser.get(f"http://127.0.0.1:{port}/")
        wait_for(browser, "counts", "audit: 0 of")
        press(browser, Keys.TAB)
        wait_for(browser, "counts", "label: 0 of 5")
        press(browser, "4", Keys.ENTER, "s", "2", Keys.ENTER)
        wait_for(browser, "counts", "label: 2 of 5 decided · 1 skipped")
        seen = shown_item(browser)
    finally:
        child.send_signal(signal.SIGKILL)  # no shutdown, no flush: only what was on disk survives
        child.wait(10)
    order = open_review(run).order["label"]
    child = start_review(run, suggestions, port)  # the kernel's lock went with the killed process
    try:
        browser.refresh()
        wait_for(browser, "counts", "audit: 0 of")
        press(browser, Keys.TAB)
        wait_for(browser, "counts", "label: 2 of 5 decided · 1 skipped")
        assert shown_item(browser) == seen == order[3]
    finally:
        child.terminate()
        child.wait(30)
    state = open_review(run)
    labels = state.labels
    assert state.decisions("label") == {order[0]: labels[3], order[1]: None, order[2]: labels[1]}
