"""The chat page of `alaya serve`, driven in a real headless Chromium (Debian's chromium + chromium-driver).

Skipped, with the reason, where Chromium, its driver or selenium is not installed (`apt-get install chromium
chromium-driver`; selenium is in the test extra). The server serves a model whose greedy decoding never emits
</s>, so a reply runs until max_tokens and can be stopped in the middle."""
import json
import shutil
import time
import urllib.request

import pytest
import torch

from alaya.model.config import preset
from alaya.model.hf import save_model
from alaya.model.mpt import AlayaForCausalLM
from conftest import start_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
KEY = "page-key"


@pytest.fixture(scope="module")
def server(tmp_path_factory, sft_tok):
    torch.manual_seed(0)
    model = AlayaForCausalLM(preset("alaya-tiny", vocab_size=600, d_model=256, n_layers=4, max_seq_len=4096))
    with torch.no_grad():  # greedy decoding never picks </s> (logit 0 against the best of 599 random logits), nor
        # starts a format marker, where a chat reply ends: the long reply below streams until it is stopped
        for t in [2] + [sft_tok.encode(m)[0] for m in ("### Output:", "### Instruction:", "\n### Output:")]:
            model.transformer.wte.weight[t].zero_()
    folder = tmp_path_factory.mktemp("page") / "model"
    save_model(model, folder, tokenizer=sft_tok)
    proc, url = start_server(folder, "--api-key", KEY, "--model-name", "alaya-page")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (CHROMIUM and DRIVER):
        pytest.skip("no Chromium + chromedriver (Debian: apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1200,800", "--lang=en-US", f"--user-data-dir={tmp_path_factory.mktemp('chrome')}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    yield driver
    driver.quit()


def wait_for(predicate, timeout=60.0, what="condition"):
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_the_page_chats_streams_stops_and_starts_over_and_shows_server_errors(browser, server, tmp_path):
    from selenium.webdriver.common.by import By

    page = browser
    page.get(server + "/")
    find = lambda css: page.find_element(By.CSS_SELECTOR, css)  # noqa: E731
    # no API key yet: the server's 401 is shown, not swallowed
    wait_for(lambda: "401" in find("#model").text, what="the 401 of /v1/models")
    key = find("#api-key")
    key.send_keys(KEY)
    page.execute_script("document.getElementById('api-key').dispatchEvent(new Event('change'))")
    wait_for(lambda: "alaya-page" in find("#model").text and "4096" in find("#model").text, what="model name and context")

    # one short reply, streamed from /v1/chat/completions
    page.execute_script("document.getElementById('temperature').value = 0; document.getElementById('max-tokens').value = 12;")
    find("#input").send_keys("你好")
    find("#send").click()
    wait_for(lambda: find("#send").is_enabled() and page.find_elements(By.CSS_SELECTOR, ".msg.assistant .body")
             and page.find_elements(By.CSS_SELECTOR, ".msg.assistant .body")[-1].text, what="the first reply")
    assert [e.text for e in page.find_elements(By.CSS_SELECTOR, ".msg.user .body")] == ["你好"]
    first = page.find_elements(By.CSS_SELECTOR, ".msg.assistant .body")[-1].text
    assert first and not page.find_elements(By.CSS_SELECTOR, ".msg.error")

    # a long reply is stopped while it streams; the server cancels its row
    before = json.loads(urllib.request.urlopen(server + "/health").read())["cancelled"]
    page.execute_script("document.getElementById('max-tokens').value = 2000;")
    find("#input").send_keys("Tell me a long story.")
    find("#send").click()
    body = wait_for(lambda: (b := page.find_elements(By.CSS_SELECTOR, ".msg.assistant .body")) and len(b) == 2
                    and len(b[-1].text) > 5 and b[-1], what="the long reply to start streaming")
    assert find("#stop").is_enabled() and not find("#send").is_enabled()
    find("#stop").click()
    wait_for(lambda: page.find_elements(By.CSS_SELECTOR, ".msg .note"), what="the (stopped) note")
    assert find("#send").is_enabled() and "(stopped)" in page.find_elements(By.CSS_SELECTOR, ".msg .note")[-1].text
    stopped_len = len(body.text)
    time.sleep(0.5)
    assert len(body.text) == stopped_len  # nothing more arrives
    wait_for(lambda: json.loads(urllib.request.urlopen(server + "/health").read())["cancelled"] > before,
             what="the server to cancel the stopped reply")

    # the interface in Chinese, then a new chat
    find("#lang").click()
    assert find("#send").text == "发送" and find("#new-chat").text == "新对话"
    page.save_screenshot(str(tmp_path / "chat.png"))
    find("#new-chat").click()
    assert page.find_elements(By.CSS_SELECTOR, ".msg") == []

    # a request the server refuses (400) is shown as an error
    page.execute_script("document.getElementById('temperature').value = 7;")
    find("#input").send_keys("hi")
    find("#send").click()
    err = wait_for(lambda: page.find_elements(By.CSS_SELECTOR, ".msg.error"), what="the 400 error")
    assert "400" in err[-1].text and "temperature" in err[-1].text


def test_the_page_is_served_without_the_api_key_and_fetches_nothing_from_outside(server):
    html = urllib.request.urlopen(server + "/").read().decode()
    assert "/v1/chat/completions" in html and "<script>" in html
    for outside in ("http://", "https://", "//cdn", "<link", "src=\"http"):
        assert outside not in html.replace("http://www.w3.org", ""), outside
