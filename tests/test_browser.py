"""The web page in a real headless Chromium (Debian's chromium and chromedriver, driven by Selenium):
type a prompt, generate, see the images appear; run an attack and see the predictions. Skipped, with the
reason, only where the browser is not installed (`make test` installs it)."""

from __future__ import annotations

import json
import shutil
import threading
import time

import pytest

from genlab.bench.load import free_port

# A label a folder dataset's metadata.jsonl may hold: it must show as these characters and run nothing.
HOSTILE = '<img src=x onerror="window.xss=1">'

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
try:
    import selenium  # noqa: F401

    HAVE_SELENIUM = True
except ImportError:
    HAVE_SELENIUM = False

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER and HAVE_SELENIUM),
    reason="the browser test needs Debian's chromium and chromium-driver and the selenium package "
    "(make test installs them: apt-get install chromium chromium-driver; pip install -e '.[dev]')",
)


@pytest.fixture(scope="module")
def server(served_runs, tmp_path_factory):
    import uvicorn

    from genlab.server.app import create_app
    from genlab.server.registry import Registry

    root = served_runs
    hostile = tmp_path_factory.mktemp("runs") / "hostile"  # a classifier whose class names are markup
    shutil.copytree(root / "classifier", hostile)
    config = json.loads((hostile / "config.json").read_text())
    config["model"]["class_names"] = [f"{HOSTILE}{i}" for i in range(config["model"]["num_classes"])]
    (hostile / "config.json").write_text(json.dumps(config))
    registry = Registry([root / "t2i", root / "diffusion", root / "classifier", hostile])
    app = create_app(registry, allowed_hosts=("127.0.0.1",))
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    srv.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def _wait(driver, condition, seconds: float = 120.0):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, seconds, poll_frequency=0.1).until(condition)


def test_prompt_generate_and_see_the_images(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(server)
    _wait(browser, lambda d: len(Select(d.find_element(By.ID, "gen-model")).options) == 2)
    Select(browser.find_element(By.ID, "gen-model")).select_by_value("t2i")
    assert browser.find_element(By.ID, "prompt").is_displayed()
    browser.find_element(By.ID, "prompt").send_keys("a small red circle at the top left")
    browser.execute_script("document.getElementById('steps').value = 4")  # a slider: set, as a drag would
    num = browser.find_element(By.ID, "num")
    num.clear()
    num.send_keys("2")
    browser.find_element(By.ID, "generate").click()
    cards = _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#gallery .card"))
    images = cards[0].find_elements(By.TAG_NAME, "img")
    assert len(images) == 2
    assert all(img.get_attribute("src").startswith("data:image/png;base64,") for img in images)
    _wait(browser, lambda d: d.execute_script("return [...document.images].every(i => i.complete)"))
    assert all(browser.execute_script("return arguments[0].naturalWidth", img) == 32 for img in images)
    assert "a small red circle at the top left" in cards[0].text and "4 steps" in cards[0].text
    assert browser.find_element(By.ID, "status").text.startswith("done in")
    assert browser.find_element(By.ID, "gen-error").text == ""

    # a class model: the class selector replaces the prompt, and a second result joins the gallery
    Select(browser.find_element(By.ID, "gen-model")).select_by_value("diffusion")
    assert not browser.find_element(By.ID, "prompt").is_displayed()
    Select(browser.find_element(By.ID, "class")).select_by_visible_text("7")
    browser.find_element(By.ID, "generate").click()
    _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#gallery .card")) == 2)
    assert "class 7" in browser.find_elements(By.CSS_SELECTOR, "#gallery .card")[0].text


def test_run_an_attack_and_see_the_predictions(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(server)
    _wait(browser, lambda d: len(Select(d.find_element(By.ID, "attack-model")).options) == 2)
    Select(browser.find_element(By.ID, "attack-model")).select_by_value("classifier")
    Select(browser.find_element(By.ID, "attack-kind")).select_by_value("pgd")
    index = browser.find_element(By.ID, "attack-index")
    index.clear()
    index.send_keys("5")
    browser.find_element(By.ID, "run-attack").click()
    _wait(browser, lambda d: d.find_element(By.ID, "attack-result").is_displayed())
    for name in ("attack-original", "attack-adversarial", "attack-perturbation"):
        assert browser.find_element(By.ID, name).get_attribute("src").startswith("data:image/png")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#before tr")) == 4  # header + top 3
    assert len(browser.find_elements(By.CSS_SELECTOR, "#after tr")) == 4
    assert "attacked label" in browser.find_element(By.ID, "attack-summary").text

    # the metrics plot draws the chosen run's curve
    Select(browser.find_element(By.ID, "metrics-model")).select_by_value("classifier")
    _wait(browser, lambda d: "points of" in d.find_element(By.ID, "metrics-note").text)


def test_hostile_class_names_show_as_text_and_run_nothing(server, browser):
    """Stored XSS: class names come from the run (and from a folder dataset's metadata.jsonl before it);
    markup in them is shown as characters, never parsed."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(server)
    _wait(browser, lambda d: len(Select(d.find_element(By.ID, "attack-model")).options) == 2)
    Select(browser.find_element(By.ID, "attack-model")).select_by_value("hostile")
    browser.find_element(By.ID, "run-attack").click()
    _wait(browser, lambda d: d.find_element(By.ID, "attack-result").is_displayed())
    cells = [c.text for c in browser.find_elements(By.CSS_SELECTOR, "#before td, #after td")]
    assert sum(HOSTILE in text for text in cells) == 6  # top 3 before and after, as literal text
    assert HOSTILE in browser.find_element(By.ID, "attack-summary").text
    assert browser.find_elements(By.CSS_SELECTOR, "#attack-result table img, #attack-summary img") == []
    time.sleep(0.3)  # time for an error event of an injected image to fire
    assert browser.execute_script("return window.xss") is None
