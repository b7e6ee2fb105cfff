"""The dashboard in a real browser: Debian's chromium, headless, driven through chromium-driver by
Selenium (scripts/test.sh installs both; nothing is downloaded). Real MQTT clients (paho-mqtt) make
the events: a client connects and the page shows it online; it is killed and the page shows its
pending will counting down, then the client offline with the cause; its timeline is the text of
`lastwill explain`; an action button disconnects a client, observed by an MQTT subscriber.

Screenshots are saved under .cache/dashboard-screenshots/ (the path is printed)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from lastwill.cli import main
from tests.integration.conftest import StepClient

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
TOKEN = "dashboard-test-token"
SHOTS = Path(__file__).resolve().parents[2] / ".cache" / "dashboard-screenshots"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1440,1000", "--hide-scrollbars")


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for path in (CHROMIUM, CHROMEDRIVER):
        assert Path(path).exists(), f"{path} is missing: scripts/test.sh installs chromium and chromium-driver"
    profile = tempfile.mkdtemp(prefix="lastwill-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def wait(driver, what, timeout: float = 10.0):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: what(d))


def css(driver, selector: str):
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, selector)
    return found[0] if found else None


def row(driver, client_id: str, state: str | None = None):
    return css(driver, f'#clients tr[data-client="{client_id}"]' + (f".{state}" if state else ""))


def shot(driver, name: str, capsys) -> Path:
    """Save a screenshot under SHOTS and print where (past pytest's capture, so that it is seen)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / name
    assert driver.save_screenshot(str(path)) and path.stat().st_size > 10_000
    with capsys.disabled():
        print(f"\nscreenshot: {path}")
    return path


def test_dashboard_online_then_pending_will_counting_down_then_offline_with_the_cause(
        broker_factory, observer_factory, browser, capsys):
    broker = broker_factory(admin_listen="127.0.0.1:0", admin_token=TOKEN)
    url = f"http://127.0.0.1:{broker.broker.admin_port}"
    observer = observer_factory(broker.port, "plant/#")

    # the page holds no data: it asks for the token, which it sends as a header from then on
    browser.get(url + "/dashboard/")
    wait(browser, lambda d: css(d, "#login").is_displayed())
    css(browser, "#token").send_keys(TOKEN)
    css(browser, "#login-form button").click()
    wait(browser, lambda d: css(d, "#live").text == "live")

    gateway = StepClient(broker.port, "gateway-1", version=5, will=("plant/gateway-1/status", b"offline", 1, True))
    sensor = StepClient(broker.port, "sensor-7", version=5, session_expiry=300,
                        will=("plant/sensor-7/status", b"offline", 1, True), will_props={"WillDelayInterval": 5})
    StepClient(broker.port, "probe-3", version=4).disconnect()
    wait(browser, lambda d: row(d, "sensor-7", "online") and row(d, "gateway-1", "online"))
    assert "armed" in row(browser, "sensor-7").text and "plant/sensor-7/status" in row(browser, "sensor-7").text
    shot(browser, "01-online.png", capsys)

    sensor.crash()  # killed: no DISCONNECT
    wait(browser, lambda d: row(d, "sensor-7", "pending"))
    first = float(row(browser, "sensor-7").find_element("css selector", ".countdown").text.split()[0])
    assert 0 < first <= 5
    # the countdown runs in the page, from the will's deadline
    wait(browser, lambda d: (r := row(d, "sensor-7", "pending")) is not None
         and float(r.find_element("css selector", ".countdown").text.split()[0]) <= first - 1.0)
    assert css(browser, '#pending li[data-client="sensor-7"]') is not None
    assert "EOF" in css(browser, '#pending li[data-client="sensor-7"]').text
    shot(browser, "02-pending-will-countdown.png", capsys)

    wait(browser, lambda d: row(d, "sensor-7", "offline"), timeout=15)
    m = observer.get()
    assert (m.topic, m.payload) == ("plant/sensor-7/status", b"offline")
    offline = row(browser, "sensor-7")
    assert offline.find_element("css selector", ".badge.cause").text == "eof"
    assert "connection lost: EOF (peer closed its side)" in offline.text
    assert "published on 'plant/sensor-7/status' to 1 subscriber(s)" in offline.text
    assert css(browser, "#no-pending").is_displayed()
    wait(browser, lambda d: css(d, '#chart-published .bar-line[data-key="eof"] .bar-value') is not None)
    assert css(browser, '#chart-published .bar-line[data-key="eof"] .bar-value').text == "1"
    shot(browser, "03-offline-with-cause.png", capsys)

    # a click shows the client's will timeline: the text `lastwill explain` prints
    offline.click()
    wait(browser, lambda d: "client 'sensor-7'" in css(d, "#timeline").text)
    shown = css(browser, "#timeline").get_attribute("textContent")
    capsys.readouterr()
    assert main(["explain", "sensor-7", "--admin", url, "--token", TOKEN]) == 0
    printed = capsys.readouterr().out
    assert [line for line in shown.splitlines() if not line.startswith("times:")] == \
        [line for line in printed.splitlines() if not line.startswith("times:")]
    assert "deferred" in shown and "published" in shown

    # the filter: by client id, or by topic with MQTT wildcards
    css(browser, "#filter").send_keys("plant/gateway-1/#")
    wait(browser, lambda d: row(d, "sensor-7") is None and row(d, "gateway-1") is not None)
    css(browser, "#filter").clear()
    css(browser, "#filter").send_keys("probe")
    wait(browser, lambda d: row(d, "gateway-1") is None and row(d, "probe-3") is not None)
    css(browser, "#filter").clear()
    css(browser, "#filter").send_keys(" ")  # (clear() sends no input event)
    wait(browser, lambda d: row(d, "gateway-1") is not None)

    # an action button: disconnect gateway-1; its will is published (MQTT 5: DISCONNECT 0x98)
    row(browser, "gateway-1").click()
    wait(browser, lambda d: "client 'gateway-1'" in css(d, "#timeline").text)
    assert not css(browser, '#actions button[data-action="publish-will"]').is_enabled()
    css(browser, '#actions button[data-action="disconnect"]').click()
    wait(browser, lambda d: "disconnected (DISCONNECT 0x98" in css(d, "#action-result").text)
    m = observer.get()
    assert (m.topic, m.payload) == ("plant/gateway-1/status", b"offline")
    wait(browser, lambda d: row(d, "gateway-1", "offline")
         and row(d, "gateway-1").find_element("css selector", ".badge.cause").text == "administrative")
    wait(browser, lambda d: "operator" in css(d, "#timeline").text)
    gateway.client.loop(0.1)
    shot(browser, "04-after-disconnect-action.png", capsys)


def test_dashboard_refuses_a_wrong_token_and_costs_nothing_unwatched(broker_factory, browser):
    broker = broker_factory(admin_listen="127.0.0.1:0", admin_token=TOKEN)
    assert broker.call(lambda: broker.broker.core.changes.changed) is None  # no page: nothing collected
    browser.get(f"http://127.0.0.1:{broker.broker.admin_port}/dashboard/")
    wait(browser, lambda d: css(d, "#login").is_displayed())
    css(browser, "#token").send_keys("not-the-token")
    css(browser, "#login-form button").click()
    wait(browser, lambda d: css(d, "#login-error").text == "this token was refused")
    assert broker.call(lambda: broker.broker.core.changes.changed) is None
    css(browser, "#token").clear()
    css(browser, "#token").send_keys(TOKEN)
    css(browser, "#login-form button").click()
    wait(browser, lambda d: css(d, "#live").text == "live")
    assert broker.call(lambda: broker.broker.core.changes.changed) is not None  # watched while the page is open
    browser.get("about:blank")  # the page goes away: the stream ends, the core stops collecting
    wait(browser, lambda d: broker.call(lambda: broker.broker.core.changes.changed) is None)
