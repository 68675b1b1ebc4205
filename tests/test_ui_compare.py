"""The compare UI in a real headless Chromium: the page loads, a question is asked, both answers appear."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from okvqa_k8s.evaluate.client import ChatClient
from okvqa_k8s.serve.app import create_app
from okvqa_k8s.serve.background import BackgroundServer
from okvqa_k8s.serve.engine import LlavaEngine
from okvqa_k8s.serve.ui import create_ui_app, short_answer_prompt
from tests.conftest import require

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
QUESTION = "What color are the shapes?"


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Base and fine-tuned servers (two tiny LLaVAs) and the UI server in front of them."""
    from okvqa_k8s.train.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("ui-models")
    engines = [
        LlavaEngine.load(build_tiny_model(root / n, seed=s), model_id=n) for n, s in (("base", 0), ("ft", 1))
    ]
    with BackgroundServer(create_app(lambda: engines[0])) as base, \
         BackgroundServer(create_app(lambda: engines[1])) as ft:  # fmt: skip
        for srv in (base, ft):
            with ChatClient(srv.url) as client:
                client.wait_ready(60)
        with BackgroundServer(create_ui_app(base.url, ft.url)) as page:
            yield {"ui": page.url, "base": base.url, "finetuned": ft.url}


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "shapes.jpg"
    img = Image.new("RGB", (96, 72), "white")
    img.paste((220, 30, 30), (20, 20, 50, 50))
    img.save(path, "JPEG")
    return path


def _expected(urls: dict[str, str], image: bytes) -> dict[str, str]:
    out = {}
    for side in ("base", "finetuned"):
        with ChatClient(urls[side]) as client:
            out[side] = client.ask(image, short_answer_prompt(QUESTION), max_tokens=16).text
    return out


def test_api_answers_both_sides_and_refuses_bad_uploads(ui: dict[str, str], photo: Path) -> None:
    from okvqa_k8s.evaluate.client import image_data_url

    image = photo.read_bytes()
    resp = httpx.post(
        ui["ui"] + "/api/ask", json={"image": image_data_url(image), "question": QUESTION}, timeout=60
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["prompt"] == short_answer_prompt(QUESTION)
    assert {k: body[k]["answer"] for k in ("base", "finetuned")} == _expected(ui, image)
    assert (body["base"]["model"], body["finetuned"]["model"]) == ("base", "ft")

    bad = httpx.post(ui["ui"] + "/api/ask", json={"image": image_data_url(b"not an image"), "question": "q"})
    assert bad.status_code == 400 and "not an image" in bad.json()["error"]["message"]
    empty = httpx.post(ui["ui"] + "/api/ask", json={"image": image_data_url(image), "question": " "})
    assert empty.status_code == 400 and empty.json()["error"]["param"] == "question"


def test_page_loads_in_headless_chromium(ui: dict[str, str]) -> None:
    require(CHROMIUM is not None, "chromium not installed (apt-get install -y chromium chromium-driver)")
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", ui["ui"] + "/"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    for element in ('id="image"', 'id="question"', 'id="ask"', 'id="base-answer"', 'id="finetuned-answer"'):
        assert element in dom


@pytest.fixture
def browser() -> Iterator[object]:
    require(CHROMIUM is not None and CHROMEDRIVER is not None,
            "chromium/chromedriver not installed (apt-get install -y chromium chromium-driver)")  # fmt: skip
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        require(False, "selenium not installed (pip install selenium)")
        raise
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def _wait_status(driver: object, prefix: str) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 60).until(lambda d: d.find_element(By.ID, "status").text.startswith(prefix))
    return driver.find_element(By.ID, "status").text  # type: ignore[attr-defined]


def test_question_in_browser_shows_both_answers(ui: dict[str, str], photo: Path, browser: object) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    driver.get(ui["ui"] + "/")  # type: ignore[attr-defined]
    driver.find_element(By.ID, "image").send_keys(str(photo))  # type: ignore[attr-defined]
    WebDriverWait(driver, 20).until(lambda d: d.find_element(By.ID, "preview").is_displayed())
    driver.find_element(By.ID, "question").send_keys(QUESTION)  # type: ignore[attr-defined]
    driver.find_element(By.ID, "ask").click()  # type: ignore[attr-defined]
    assert _wait_status(driver, "Done") == "Done."

    def shown(side: str) -> str:
        return driver.find_element(By.ID, f"{side}-answer").get_attribute("textContent")  # type: ignore[attr-defined]

    expected = _expected(ui, photo.read_bytes())
    assert {"base": shown("base"), "finetuned": shown("finetuned")} == expected
    assert driver.find_element(By.ID, "base-model").text == "(base)"  # type: ignore[attr-defined]
    assert driver.find_element(By.ID, "finetuned-model").text == "(ft)"  # type: ignore[attr-defined]


def test_bad_upload_shows_the_error(ui: dict[str, str], tmp_path: Path, browser: object) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    fake = tmp_path / "notes.jpg"
    fake.write_bytes(b"these are notes, not a photo")
    driver = browser
    driver.get(ui["ui"] + "/")  # type: ignore[attr-defined]
    driver.find_element(By.ID, "image").send_keys(str(fake))  # type: ignore[attr-defined]
    WebDriverWait(driver, 20).until(lambda d: d.find_element(By.ID, "preview").get_attribute("src"))
    driver.find_element(By.ID, "question").send_keys(QUESTION)  # type: ignore[attr-defined]
    driver.find_element(By.ID, "ask").click()  # type: ignore[attr-defined]
    assert "not an image" in _wait_status(driver, "Error")
    assert driver.find_element(By.ID, "base-answer").text == ""  # type: ignore[attr-defined]
