// A device's webhook (settings, a test delivery, the delivery log with redeliver) and its AI
// auto-reply settings.

import {ApiError, get, post, put, seg} from "./api.js";
import {announce, facts, field, h, notice, section, when} from "./dom.js";
import {subscribe} from "./events.js";

export function webhookSection(sessionId) {
  const url = h("input", {name: "url", type: "url", required: true, autocomplete: "off"});
  const eventsInput = h("input", {name: "events", autocomplete: "off"});
  const enabled = h("input", {name: "enabled", type: "checkbox"});
  const rotate = h("input", {name: "rotateSecret", type: "checkbox"});
  const current = h("div");
  const result = h("div", {"aria-live": "polite"});
  const log = h("div");
  const statusFilter = h("select", {name: "deliveryStatus"}, h("option", {value: ""}, "All"),
    ["pending", "delivered", "failed", "disabled"].map((s) => h("option", {value: s}, s)));

  const form = h("form", {method: "post", class: "settings"},
    field("URL", url, "Where wasup POSTs this device's events (signed, Standard Webhooks)."),
    field("Events", eventsInput, "Comma-separated types or groups (message, status, *); empty: all."),
    h("div", {class: "check"}, enabled, h("label", {for: (enabled.id = "webhook-enabled")}, "Enabled")),
    h("div", {class: "check"}, rotate, h("label", {for: (rotate.id = "webhook-rotate")}, "Rotate the signing secret")),
    h("div", {class: "actions"},
      h("button", {type: "submit", class: "primary"}, "Save webhook"),
      h("button", {type: "button", onclick: test}, "Send a test event")),
    result);

  async function load() {
    try {
      const s = (await get(seg`/devices/${sessionId}/settings/webhook`)).data;
      url.value = s.url ?? "";
      eventsInput.value = (s.events ?? []).join(", ");
      enabled.checked = s.enabled !== false;
      current.replaceChildren(facts([["Enabled", s.enabled ? "yes" : "no"],
        ["Signing secret set", s.secretSet ? "yes" : "no"],
        ["Disabled because", s.disabledReason], ["Disabled at", s.disabledAt ? when(s.disabledAt) : null]]));
    } catch (err) {
      enabled.checked = true;
      current.replaceChildren(err instanceof ApiError && err.status === 404 && err.code !== "DEVICE_NOT_FOUND"
        ? notice("No webhook set.") : notice(err.message, "error"));
    }
    loadLog();
  }

  async function loadLog() {
    const query = statusFilter.value ? `?status=${encodeURIComponent(statusFilter.value)}` : "";
    try {
      const rows = (await get(seg`/devices/${sessionId}/webhook/deliveries` + query)).data;
      log.replaceChildren(rows.length === 0 ? notice("No delivery yet.") :
        h("div", {class: "scroll"}, h("table", {class: "deliveries"},
          h("caption", {class: "visually-hidden"}, "Webhook deliveries, newest first"),
          h("thead", {}, h("tr", {}, ["Event", "Status", "Attempts", "Created", "Next attempt", "Last answer", ""]
            .map((t) => h("th", {scope: "col"}, t)))),
          h("tbody", {}, rows.map(deliveryRow)))));
    } catch (err) {
      log.replaceChildren(notice(`The delivery log could not be loaded: ${err.message}`, "error"));
    }
  }

  function deliveryRow(d) {
    const last = (d.attemptLog ?? []).at(-1);
    const answer = last ? (last.statusCode ?? last.error ?? last.status ?? "") : "";
    return h("tr", {},
      h("td", {}, d.eventType), h("td", {}, d.status), h("td", {}, String(d.attempts)),
      h("td", {}, when(d.createdAt)), h("td", {}, when(d.nextAttemptAt)), h("td", {}, String(answer)),
      h("td", {}, h("button", {type: "button", "aria-label": `Redeliver ${d.eventType} ${d.id}`,
        onclick: () => redeliver(d.id)}, "Redeliver")));
  }

  async function redeliver(id) {
    try {
      await post(seg`/devices/${sessionId}/webhook/deliveries/${id}/redeliver`);
      announce("Delivery due again now");
      result.replaceChildren(notice("Redelivery scheduled."));
    } catch (err) {
      result.replaceChildren(notice(`Not redelivered: ${err.message}`, "error"));
    }
    loadLog();
  }

  async function test() {
    try {
      const r = (await post(seg`/devices/${sessionId}/settings/webhook/test`)).data;
      result.replaceChildren(notice(`Test: ${r.delivered ? "delivered" : "not delivered"}${r.statusCode ? ` (HTTP ${r.statusCode})` : ""}${r.error ? `: ${r.error}` : ""}`));
    } catch (err) {
      result.replaceChildren(notice(`Test failed: ${err.message}`, "error"));
    }
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = {url: url.value.trim(), enabled: enabled.checked};
    const events = eventsInput.value.split(",").map((s) => s.trim()).filter(Boolean);
    if (events.length) body.events = events;
    if (rotate.checked) body.rotateSecret = true;
    try {
      const s = (await put(seg`/devices/${sessionId}/settings/webhook`, body)).data;
      rotate.checked = false;
      result.replaceChildren(notice("Webhook saved."),
        s.secret ? h("p", {}, "Signing secret (shown this once): ", h("span", {class: "mono"}, s.secret)) : "");
      load();
    } catch (err) {
      result.replaceChildren(notice(`Not saved: ${err.message}`, "error"));
    }
  });
  statusFilter.addEventListener("change", loadLog);
  // Each event of this device is a delivery (when the webhook takes its type): the log
  // follows them, once per burst.
  let pending = null;
  const unsubscribe = subscribe((event) => {
    if (event.sessionId !== sessionId || pending !== null) return;
    pending = window.setTimeout(() => {
      pending = null;
      if (element.isConnected) loadLog();
    }, 300);
  });
  load();
  const element = section("webhook", "Webhook", current, form,
    h("h3", {}, "Delivery log"),
    h("div", {class: "filters"}, field("Status", statusFilter),
      h("button", {type: "button", onclick: loadLog}, "Refresh log")),
    log);
  return {element, stop: () => { unsubscribe(); window.clearTimeout(pending); }};
}

const AI_NUMBERS = [
  ["maxRepliesPerMinute", "Replies per minute at most", "1"],
  ["historyLimit", "Messages of history sent to the model", "1"],
  ["operatorPauseSeconds", "Seconds auto-reply pauses after you write yourself", "any"],
  ["timeoutSeconds", "Seconds to wait for the model", "any"],
  ["maxTokens", "Largest reply in tokens (empty: the model's default)", "1"],
  ["temperature", "Temperature (empty: the model's default)", "any"],
];

export function aiSection(sessionId) {
  const enabled = h("input", {type: "checkbox", id: "ai-enabled"});
  const autoReply = h("input", {type: "checkbox", id: "ai-autoreply"});
  const model = h("input", {name: "model", autocomplete: "off"});
  const baseUrl = h("input", {name: "baseUrl", type: "url", autocomplete: "off"});
  const apiKey = h("input", {name: "apiKey", type: "password", autocomplete: "off"});
  const prompt = h("textarea", {name: "systemPrompt", rows: 4});
  const numbers = Object.fromEntries(AI_NUMBERS.map(([name, , step]) =>
    [name, h("input", {name, type: "number", step, min: 0})]));
  const keyState = h("p", {class: "hint"});
  const result = h("div", {"aria-live": "polite"});
  const form = h("form", {method: "post", class: "settings"},
    h("div", {class: "check"}, enabled, h("label", {for: "ai-enabled"}, "AI enabled")),
    h("div", {class: "check"}, autoReply, h("label", {for: "ai-autoreply"}, "Answer incoming messages automatically")),
    field("Model", model),
    field("Base URL", baseUrl, "An OpenAI-compatible endpoint (…/v1)."),
    field("API key", apiKey, "Leave empty to keep the stored key."), keyState,
    field("System prompt", prompt),
    h("div", {class: "grid"}, AI_NUMBERS.map(([name, label]) => field(label, numbers[name]))),
    h("button", {type: "submit", class: "primary"}, "Save AI settings"),
    result);

  function fill(s) {
    enabled.checked = s.enabled;
    autoReply.checked = s.autoReply;
    model.value = s.model ?? "";
    baseUrl.value = s.baseUrl ?? "";
    prompt.value = s.systemPrompt ?? "";
    apiKey.value = "";
    keyState.textContent = s.apiKeySet ? "An API key is stored." : "No API key stored.";
    for (const [name] of AI_NUMBERS) numbers[name].value = s[name] ?? "";
  }

  async function load() {
    try {
      fill((await get(seg`/devices/${sessionId}/settings/ai`)).data);
    } catch (err) {
      result.replaceChildren(notice(`The AI settings could not be loaded: ${err.message}`, "error"));
    }
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = {enabled: enabled.checked, autoReply: autoReply.checked,
      model: model.value.trim() || null, baseUrl: baseUrl.value.trim() || null,
      systemPrompt: prompt.value};
    if (apiKey.value) body.apiKey = apiKey.value;
    for (const [name, , step] of AI_NUMBERS) {
      const raw = numbers[name].value.trim();
      body[name] = raw === "" ? null : (step === "1" ? Number.parseInt(raw, 10) : Number(raw));
    }
    try {
      fill((await put(seg`/devices/${sessionId}/settings/ai`, body)).data);
      result.replaceChildren(notice("AI settings saved."));
    } catch (err) {
      result.replaceChildren(notice(`Not saved: ${err.message}`, "error"));
    }
  });
  load();
  return section("ai", "AI auto-reply", form);
}
