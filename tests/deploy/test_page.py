"""The web page in a real headless chromium: type texts, see a label and a probability bar per class.

Needs chromium, chromedriver and selenium (scripts/install-browser.sh installs them). Skips, saying
why, only when they are missing or chromium cannot start. Set BERTFIT_SCREENSHOT=path.png to keep
the screenshot it takes.
"""

from __future__ import annotations

import os
import shutil

import pytest

from conftest import LiveServer

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=900,1000"]


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium missing: run scripts/install-browser.sh")
    from selenium.common.exceptions import WebDriverException

    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if binary is None or driver is None:
        pytest.skip("chromium or chromedriver not installed: run scripts/install-browser.sh")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    try:
        chrome = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))
    except WebDriverException as error:
        pytest.skip(f"chromium cannot start here: {error.msg}")
    yield chrome
    chrome.quit()


@pytest.fixture(scope="module")
def page_server(tiny_exported_run):
    from bertfit.deploy.serve import ServeSettings, create_app
    from bertfit.infer.predictor import Predictor

    with LiveServer(create_app(Predictor(tiny_exported_run), ServeSettings(), tiny_exported_run)) as live:
        yield live


def test_page_classifies_typed_texts(browser, page_server, tmp_path):
    import httpx
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    texts = ["Stocks rallied as oil prices fell", "The striker scored twice in the final"]
    expected = httpx.post(f"{page_server.url}/predict", json={"texts": texts}).json()["predictions"]
    browser.get(page_server.url + "/")
    wait = WebDriverWait(browser, 20)
    wait.until(lambda b: "labels:" in b.find_element(By.ID, "model").text)  # /metadata answered
    browser.find_element(By.ID, "go").click()
    wait.until(lambda b: b.find_element(By.ID, "error").text)
    assert "type a text first" in browser.find_element(By.ID, "error").text
    browser.find_element(By.ID, "perline").click()
    browser.find_element(By.ID, "texts").send_keys("\n".join(texts))
    browser.find_element(By.ID, "go").click()
    wait.until(ready.presence_of_all_elements_located((By.CSS_SELECTOR, "#results .result")))
    results = browser.find_elements(By.CSS_SELECTOR, "#results .result")
    assert len(results) == 2
    for result, want in zip(results, expected):
        assert result.find_element(By.CSS_SELECTOR, ".label").text == want["label"]
        rows = result.find_elements(By.CSS_SELECTOR, ".row")
        assert sorted(r.find_element(By.CSS_SELECTOR, ".name").text for r in rows) == sorted(want["probabilities"])
        widths = [float(r.find_element(By.CSS_SELECTOR, ".bar").get_attribute("style").split("width:")[1].split("%")[0])
                  for r in rows]
        assert sum(widths) == pytest.approx(100, abs=0.5) and widths == sorted(widths, reverse=True)
        assert rows[0].find_element(By.CSS_SELECTOR, ".name").text == want["label"]  # highest bar is the label
    assert browser.find_element(By.ID, "error").text == ""
    shot = os.environ.get("BERTFIT_SCREENSHOT") or str(tmp_path / "page.png")
    assert browser.save_screenshot(shot)
