// Pairing a pending device: the live QR code (replaced on every qr_code event, with a
// countdown to expiresAt and the attempt number) and pairing by phone code instead.

import {ApiError, get, post, seg} from "./api.js";
import {announce, field, h, notice} from "./dom.js";
import {subscribe} from "./events.js";

// A section for `device` (sessionId); returns {element, stop}.
export function pairingPanel(device) {
  const img = h("img", {class: "qr", width: 264, height: 264, alt: "QR code loading"});
  const attempt = h("p", {class: "attempt"});
  const countdown = h("p", {class: "countdown", "aria-live": "off"});
  const state = h("div", {"aria-live": "polite"});
  let expiresAt = null;
  let shown = null;

  function show(qr) {
    shown = qr.qrString;
    img.src = qr.qrCode;
    img.alt = `QR code to scan with WhatsApp on the phone, code ${qr.attempt} of ${qr.maxAttempts}`;
    img.dataset.attempt = String(qr.attempt);
    attempt.textContent = `Code ${qr.attempt} of ${qr.maxAttempts}`;
    expiresAt = Date.parse(qr.expiresAt);
    state.replaceChildren();
    tick();
  }

  function tick() {
    if (expiresAt === null) return;
    const left = Math.max(0, Math.round((expiresAt - Date.now()) / 1000));
    countdown.textContent = left > 0 ? `Expires in ${left} s` : "Expired: a new code is coming";
  }

  async function load() {
    try {
      show((await get(seg`/devices/${device.sessionId}/qr`)).data);
    } catch (err) {
      if (err instanceof ApiError && err.status === 409) {
        state.replaceChildren(notice("No QR code on show: the device is not pairing."));
      } else {
        state.replaceChildren(notice(`The QR code could not be loaded: ${err.message}`, "error"));
      }
    }
  }

  const unsubscribe = subscribe((event) => {
    if (event.sessionId !== device.sessionId) return;
    if (event.type === "qr_code" && event.data.qrString !== shown) {
      show(event.data);
      announce(`New QR code, ${event.data.attempt} of ${event.data.maxAttempts}`);
    } else if (event.type === "qr_timeout") {
      expiresAt = null;
      countdown.textContent = "";
      state.replaceChildren(notice("No code was scanned in time. Log in again for new codes."));
    }
  });
  const timer = window.setInterval(tick, 1000);
  load();

  const element = h("section", {id: "pairing", "aria-labelledby": "pairing-title", class: "card"},
    h("h2", {id: "pairing-title"}, "Pair this device"),
    h("p", {}, "On the phone: WhatsApp › Settings › Linked devices › Link a device, then scan."),
    h("figure", {class: "qr-box"}, img, h("figcaption", {}, attempt, countdown)),
    state,
    pairCodeForm(device));
  return {element, stop: () => { unsubscribe(); window.clearInterval(timer); }};
}

function pairCodeForm(device) {
  const phone = h("input", {name: "phoneNumber", type: "tel", required: true, autocomplete: "off",
    inputmode: "tel"});
  const result = h("div", {"aria-live": "polite"});
  const form = h("form", {class: "pair-code", method: "post"},
    h("h3", {}, "Or link with a phone number"),
    field("Phone number", phone, "International format, e.g. +15551234567."),
    h("button", {type: "submit"}, "Get a pairing code"),
    result);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    result.replaceChildren();
    try {
      const data = (await post(seg`/devices/${device.sessionId}/pair-code`,
        {phoneNumber: phone.value.trim()})).data;
      result.replaceChildren(
        h("p", {}, "Type this code on the phone (Linked devices › Link with phone number):"),
        h("p", {class: "pair-code-value mono"}, data.code));
    } catch (err) {
      result.replaceChildren(notice(`No code: ${err.message}`, "error"));
    }
  });
  return form;
}
