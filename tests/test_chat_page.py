"""The chat page at `/`, in a real headless browser (Debian's chromium through Selenium and
chromedriver; .ci/run installs them): it lists the models, streams a reply that can be stopped,
shows tokens/s, keeps the conversation across a reload, switches the model, and renders Markdown
without letting a reply inject markup."""

from __future__ import annotations

import os
import shutil
import signal
import time

import pytest

import tellme
from tests.helpers import write_small_gguf
from tests.test_server import start

webdriver = pytest.importorskip("selenium.webdriver")
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
if not (CHROMIUM and DRIVER):
    if os.environ.get("CI"):
        pytest.fail("CI needs chromium and chromedriver (.ci/run installs them)", pytrace=False)
    pytest.skip("no chromium/chromedriver here (apt-get install chromium chromium-driver)", allow_module_level=True)

ASK = "Good morrow, fair Juliet"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = tmp_path_factory.mktemp("page")
    # big enough (12 layers of 1024) that a long reply takes a while to stream
    write_small_gguf(d / "beta.gguf", tellme.load().tokenizer, hidden=1024, layers=12, seed=3)
    proc, url = start("-m", "default", "-m", d / "beta.gguf", "--context", "256", "--api-key", "page-key")
    yield url, d / "beta.gguf"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 0


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def wait(predicate, timeout=30.0, what="", state=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}" + (f": {state()}" if state else ""))


def stored(browser):
    """The conversation the page saved (it saves when a reply ends)."""
    return browser.execute_script("return JSON.parse(localStorage.getItem('tellme.chat'))")


def last_stats(browser) -> str:
    messages = stored(browser)["messages"]
    return (messages[-1].get("stats") or "") if messages else ""


def set_field(browser, field, value):
    browser.execute_script("document.getElementById(arguments[0]).value = arguments[1]; settings()", field, str(value))


def test_chat_page(server, browser):
    from selenium.webdriver.support.ui import Select

    url, beta_path = server
    browser.get(url + "/health")  # the page's origin, before the page asks for the key
    browser.execute_script("localStorage.clear(); localStorage.setItem('tellme.key', 'page-key')")
    browser.get(url + "/")
    wait(lambda: browser.find_element("id", "model").get_attribute("data-ready"), what="the model list")
    models = Select(browser.find_element("id", "model"))
    assert [o.text for o in models.options] == ["default", "beta.gguf"]

    # a long reply on the random model: seen while it streams, then stopped
    models.select_by_visible_text("beta.gguf")
    set_field(browser, "temperature", 0)
    set_field(browser, "max_tokens", 230)
    browser.find_element("id", "input").send_keys(ASK)
    browser.find_element("id", "send").click()
    wait(lambda: browser.execute_script(
        "const b = document.querySelectorAll('.message.assistant .body'); return b.length && b[b.length-1].innerHTML"),
        what="the first streamed text", state=lambda: stored(browser))
    assert browser.find_element("id", "send").get_attribute("disabled")  # still streaming
    assert not browser.find_element("id", "stop").get_attribute("disabled")
    browser.find_element("id", "stop").click()
    wait(lambda: browser.find_element("id", "send").is_enabled(), what="the reply to stop")
    reply = stored(browser)["messages"][-1]
    assert reply["stats"].endswith("(stopped)") and reply["content"]
    beta = tellme.load(beta_path, context=256)
    full = beta.chat([{"role": "user", "content": ASK}], max_tokens=230, temperature=0)
    assert full.startswith(reply["content"]) and len(reply["content"]) < len(full)  # cut short, in order

    # a new chat on the shipped model, whole: the model's own greedy reply and its speed
    browser.find_element("id", "new").click()
    models.select_by_visible_text("default")
    set_field(browser, "max_tokens", 40)
    browser.find_element("id", "input").send_keys(ASK)
    browser.find_element("id", "send").click()
    wait(lambda: "tokens/s" in last_stats(browser), what="a finished reply")
    messages = stored(browser)["messages"]
    default = tellme.load(context=256)
    assert messages[-1]["content"] == default.chat([{"role": "user", "content": ASK}], max_tokens=40, temperature=0)
    assert messages[-1]["model"] == "default"

    # the conversation survives a reload, then goes on with the other model
    browser.refresh()
    wait(lambda: browser.find_element("id", "model").get_attribute("data-ready"), what="the model list")
    assert len(browser.find_elements("css selector", ".message")) == 2
    Select(browser.find_element("id", "model")).select_by_visible_text("beta.gguf")
    browser.execute_script("settings()")
    browser.find_element("id", "input").send_keys("And thou?")
    browser.find_element("id", "send").click()
    wait(lambda: len(stored(browser)["messages"]) == 4 and stored(browser)["messages"][-1].get("stats"),
         what="the second reply")
    history = [{"role": m["role"], "content": m["content"]} for m in stored(browser)["messages"][:3]]
    last = stored(browser)["messages"][-1]
    assert last["model"] == "beta.gguf" and last["content"] == beta.chat(history, max_tokens=40, temperature=0)

    html = browser.execute_script("return markdown(arguments[0])",
                                  "# Title\n**bold** and `code` and *it*\n- one\n- two\n```py\nx < 1 <script>\n```")
    assert "<h3>Title</h3>" in html and "<strong>bold</strong>" in html and "<code>code</code>" in html
    assert "<em>it</em>" in html and "<ul><li>one</li><li>two</li></ul>" in html
    assert '<pre><code class="language-py">x &lt; 1 &lt;script&gt;\n</code></pre>' in html
