"""The dashboard in headless Chromium against a real wasup with the simulator engine.

One server and one browser for the module (each test opens its own tab, so it signs in
afresh: the token lives in the tab's sessionStorage). QR codes rotate every 2 seconds
(``qr_first_timeout``/``qr_next_timeout``), so a rotation is seen without long waits.
Screenshots are kept under ``artifacts/dashboard/`` (see tests/browser_support.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser_support import (
    ARTIFACTS,
    TOKEN,
    ServerThread,
    open_browser,
    require_chromium,
    screenshot,
)

QR_SECONDS = 2.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    require_chromium()
    data = tmp_path_factory.mktemp("dashboard") / "data"
    with ServerThread(data, qr_first_timeout=QR_SECONDS, qr_next_timeout=QR_SECONDS,
                      qr_max_attempts=50, allow_networks=["127.0.0.0/8"]) as running:
        yield running


@pytest.fixture(scope="module")
def browser(server: ServerThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with open_browser(tmp_path_factory.mktemp("chromium-profile")) as context:
        yield context
    print(f"\nscreenshots: {ARTIFACTS}")


@pytest.fixture
def page(browser: Any, server: ServerThread) -> Iterator[Any]:
    """A new tab; fails the test on any Content-Security-Policy violation or script error."""
    tab = browser.new_page()
    problems: list[str] = []

    def on_console(message: Any) -> None:
        # An answer such as 404 or 409 is logged as "Failed to load resource": not a problem.
        if "Content Security Policy" in message.text or (
            message.type == "error" and "Failed to load resource" not in message.text
        ):
            problems.append(message.text)

    tab.on("pageerror", lambda exc: problems.append(f"script error: {exc}"))
    tab.on("console", on_console)
    yield tab
    tab.close()
    assert problems == []


def api(server: ServerThread) -> httpx.Client:
    return httpx.Client(base_url=server.url + "/api/whatsapp", headers={"X-API-TOKEN": TOKEN},
                        timeout=10)


def sign_in(page: Any, server: ServerThread) -> None:
    page.goto(server.url + "/")  # a browser asking for / lands on the dashboard
    assert page.url == server.url + "/dashboard"
    page.get_by_label("Operator token").fill(TOKEN)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Devices", level=1).wait_for()
    page.locator("#live.on").wait_for()  # the WebSocket is open


def create_device(page: Any, user: str, alias: str) -> None:
    page.get_by_label("User id").fill(user)
    page.get_by_label("Alias").fill(alias)
    page.get_by_role("button", name="Create device").click()
    page.get_by_role("heading", name=alias, level=1).wait_for()


def test_pair_a_device_with_the_live_qr_code(page: Any, server: ServerThread) -> None:
    page.goto(server.url + "/dashboard")
    page.get_by_label("Operator token").fill("wrong-token")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("alert").filter(has_text="That token was refused").wait_for()
    sign_in(page, server)
    create_device(page, "alice", "Shop phone")
    assert page.evaluate("sessionStorage.getItem('wasup.token')") == TOKEN
    assert TOKEN not in page.url
    page.get_by_text("Shown this once").wait_for()  # the device's API key, once

    qr = page.locator("img.qr")
    page.locator("img.qr[src^='data:image/png;base64,']").wait_for()
    first_src, first_attempt = qr.get_attribute("src"), qr.get_attribute("data-attempt")
    page.get_by_text("Expires in").wait_for()
    page.get_by_text("of 50").first.wait_for()
    screenshot(page, "1-qr-code")

    # The code rotates on the next qr_code event: a new image and the next attempt number.
    page.locator(f"img.qr:not([data-attempt='{first_attempt}'])").wait_for(
        timeout=QR_SECONDS * 3000
    )
    assert qr.get_attribute("src") != first_src
    assert int(qr.get_attribute("data-attempt")) > int(first_attempt)
    screenshot(page, "2-qr-rotated")

    page.evaluate("() => { window.notReloaded = true; }")
    with api(server) as client:
        r = client.post("/simulator/devices/user_alice_device_shop-phone/scan", json={})
        assert r.status_code == 200, r.text
    page.locator(".device-status [data-status='connected']").wait_for()
    assert page.locator(".device-status [data-status]").inner_text() == "connected"
    assert page.evaluate("window.notReloaded") is True  # live, not a reload
    # Screen readers hear it: the polite live region says so.
    from playwright.sync_api import expect

    expect(page.locator("#announcer")).to_have_text("Shop phone is now connected")
    assert page.locator("img.qr").count() == 0  # pairing is over
    screenshot(page, "3-connected")

    # The state history, newest first: created -> connecting -> connected.
    timeline = page.get_by_role("list", name="State history, newest first")
    timeline.locator("li.to-connected").wait_for()
    assert [item.get_attribute("class") for item in timeline.locator("li").all()] == [
        "to-connected", "to-connecting", "to-pending"]
    assert "created" in timeline.locator("li").last.inner_text()
    # Health and troubleshooting of a connected device.
    page.locator("#health p > .verdict-pass").wait_for()  # overall
    page.locator("#troubleshoot").get_by_text("No issue found.").wait_for()
    page.locator("#history").scroll_into_view_if_needed()
    screenshot(page, "4-history")

    # The devices page shows it connected, counted, and filterable.
    page.get_by_role("link", name="Devices", exact=True).click()
    card = page.locator("li.device", has_text="Shop phone")
    card.locator("[data-status='connected']").wait_for()
    page.get_by_label("Status", exact=True).select_option("pending")
    card.wait_for(state="detached")
    page.get_by_label("Status", exact=True).select_option("connected")
    card.wait_for()
    assert page.locator(".counts li[data-status='connected'] .count").inner_text() == "1"

    # The event monitor kept what the stream brought.
    page.get_by_role("link", name="Event monitor").click()
    page.locator("li.event[data-type='device_connected']").first.wait_for()
    page.locator("li.event[data-type='qr_code']").first.wait_for()
    screenshot(page, "5-event-monitor")


def test_readable_at_360_px_without_horizontal_scroll(page: Any, server: ServerThread) -> None:
    def fits(name: str) -> None:
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 360, f"{name}: the page is {width} px wide"
        screenshot(page, name)

    page.set_viewport_size({"width": 360, "height": 740})
    sign_in(page, server)
    create_device(page, "bob", "A rather long device alias to wrap")
    page.locator("img.qr").wait_for()
    fits("6-narrow-pairing")

    # Pairing by phone code instead of the QR code.
    page.get_by_label("Phone number", exact=True).fill("+15551234567")
    page.get_by_role("button", name="Get a pairing code").click()
    code = page.locator(".pair-code-value").inner_text()
    session = "user_bob_device_a-rather-long-device-alias-to-wrap"
    with api(server) as client:
        r = client.post(f"/simulator/devices/{session}/scan", json={"code": code})
        assert r.status_code == 200, r.text
    page.locator(".device-status [data-status='connected']").wait_for()
    page.locator(".timeline li").first.wait_for()
    fits("7-narrow-device")

    page.get_by_role("link", name="Devices", exact=True).click()
    page.locator("li.device").first.wait_for()
    fits("8-narrow-devices")
    page.get_by_role("link", name="Event monitor").click()
    page.locator("li.event").first.wait_for()
    fits("9-narrow-events")


def test_keyboard_only_create_and_delete(page: Any, server: ServerThread) -> None:
    page.goto(server.url + "/dashboard")
    page.keyboard.type(TOKEN)  # the token field has the focus
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="Devices", level=1).wait_for()

    def tab_to(name: str) -> None:
        for _ in range(40):
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.name || document.activeElement.id") == name:
                return
        raise AssertionError(f"Tab never reached {name}")

    tab_to("userId")
    page.keyboard.type("carol")
    tab_to("alias")
    page.keyboard.type("Desk")
    tab_to("create-device")
    focus_ring = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert focus_ring != "none"  # focus is visible
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="Desk", level=1).wait_for()

    # Delete: the dialog takes the focus, Escape cancels and gives it back.
    delete = page.get_by_role("button", name="Delete", exact=True)
    delete.focus()
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name="Delete this device?")
    dialog.wait_for()
    assert page.evaluate("document.activeElement.id") == "confirm-cancel"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "confirm-ok"
    page.keyboard.press("Tab")  # trapped: back to Cancel, not out to the page
    assert page.evaluate("document.activeElement.id") == "confirm-cancel"
    page.keyboard.press("Escape")
    dialog.wait_for(state="hidden")
    assert page.evaluate("document.activeElement.textContent") == "Delete"
    screenshot(page, "10-keyboard-device")

    page.keyboard.press("Enter")
    dialog.wait_for()
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")  # confirm
    page.get_by_role("heading", name="Devices", level=1).wait_for()
    page.locator("li.device", has_text="Desk").wait_for(state="detached")
    with api(server) as client:
        assert client.get("/devices/user_carol_device_desk").status_code == 404


def test_webhook_delivery_log_and_ai_settings(page: Any, server: ServerThread) -> None:
    sign_in(page, server)
    create_device(page, "dave", "Hooks")
    webhook = page.locator("#webhook")
    # Nothing listens on port 9: every delivery fails and waits for its next attempt.
    webhook.get_by_label("URL").fill("http://127.0.0.1:9/hook")
    webhook.get_by_role("button", name="Save webhook").click()
    webhook.get_by_text("Webhook saved.").wait_for()
    webhook.get_by_text("Signing secret (shown this once)").wait_for()

    with api(server) as client:
        r = client.post("/simulator/devices/user_dave_device_hooks/scan", json={})
        assert r.status_code == 200, r.text
    page.locator(".device-status [data-status='connected']").wait_for()
    # The log follows the device's events: no reload, no refresh.
    row = webhook.locator("table.deliveries tbody tr").first
    row.wait_for()
    row.get_by_role("button", name="Redeliver").click()
    webhook.get_by_text("Redelivery scheduled.").wait_for()
    screenshot(page, "11-webhook")

    ai = page.locator("#ai")
    ai.get_by_label("Model", exact=True).fill("local-test-model")
    ai.get_by_label("Replies per minute at most").fill("7")
    ai.get_by_role("button", name="Save AI settings").click()
    ai.get_by_text("AI settings saved.").wait_for()
    with api(server) as client:
        stored = client.get("/devices/user_dave_device_hooks/settings/ai").json()["data"]
    assert (stored["model"], stored["maxRepliesPerMinute"]) == ("local-test-model", 7)

    # Log out asks first; the new status arrives live.
    page.get_by_role("button", name="Log out", exact=True).click()
    page.get_by_role("dialog", name="Log this device out?").get_by_role(
        "button", name="Log out").click()
    page.locator(".device-status [data-status='logged_out']").wait_for()


def test_api_docs_page(page: Any, server: ServerThread, tmp_path: Path) -> None:
    sign_in(page, server)
    page.get_by_role("link", name="API docs").click()
    page.wait_for_url(server.url + "/docs")
    page.locator(".swagger-ui .info .title", has_text="wasup").wait_for()
    page.locator(".opblock-summary-path", has_text="/devices/{deviceId}/qr").first.wait_for()
    page.locator("button.authorize.locked").wait_for()  # the tab's token, for "Try it out"
    operation = page.locator("#operations-sessions-listSessions")
    operation.locator(".opblock-summary").click()
    operation.get_by_role("button", name="Try it out").click()
    operation.get_by_role("button", name="Execute").click()
    operation.locator(".live-responses-table .response-col_status", has_text="200").wait_for()
    screenshot(page, "12-api-docs")
