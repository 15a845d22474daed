// One device: status and actions (login, logout, cancel, delete), pairing while pending,
// connection info and statistics, the state history as a timeline, health and
// troubleshooting; the webhook and AI settings come from settings.js.

import {ApiError, del, get, post, seg} from "./api.js";
import {announce, facts, h, notice, section, statusBadge, when} from "./dom.js";
import {confirmAction} from "./dialog.js";
import {createdKeys} from "./devices.js";
import {onReconnect, subscribe} from "./events.js";
import {pairingPanel} from "./pairing.js";
import {aiSection, webhookSection} from "./settings.js";

// A route that answers 404 NOT_FOUND (not DEVICE_NOT_FOUND) is missing from this server.
function unavailable(err) {
  return err instanceof ApiError && err.status === 404 && err.code === "NOT_FOUND";
}

export function detailPage(main, sessionId) {
  const device = {sessionId};
  const title = h("h1", {}, sessionId);
  const status = h("p", {class: "device-status", role: "status"});
  const actionsError = h("div");
  const pairingSlot = h("div");
  const info = h("div");
  const history = h("ol", {class: "timeline", "aria-label": "State history, newest first"});
  const historyState = h("div");
  const olderHistory = h("div");
  const health = h("div");
  const trouble = h("div");
  let pairing = null;
  let gone = false;
  // Events seen so far: an answer to a GET sent before the latest event is older than it.
  let eventsSeen = 0;

  const webhook = webhookSection(sessionId);
  const key = createdKeys.get(sessionId);
  createdKeys.delete(sessionId);

  const button = (label, handler, extra = {}) =>
    h("button", {type: "button", onclick: () => run(label, handler), ...extra}, label);
  const actions = h("div", {class: "actions", role: "group", "aria-label": "Device actions"},
    button("Log in", () => post(seg`/devices/${sessionId}/login`)),
    button("Log out", logout),
    button("Cancel session", () => post(seg`/sessions/${sessionId}/cancel`)),
    button("Delete", remove, {class: "danger"}));

  main.append(
    h("p", {}, h("a", {href: "#/devices"}, "‹ All devices")),
    title, status,
    key ? h("div", {class: "card key", role: "note"},
      h("h2", {}, "API key of this device"),
      h("p", {}, "Shown this once: wasup stores only its hash. The device's own application sends it as X-API-TOKEN."),
      h("p", {class: "mono"}, key)) : null,
    actions, actionsError, pairingSlot,
    h("nav", {class: "toc", "aria-label": "Sections"},
      ["info:Connection", "history:History", "health:Health", "troubleshoot:Troubleshooting",
        "webhook:Webhook", "ai:AI"].map((pair) => {
        const [id, label] = pair.split(":");
        return h("a", {href: `#/devices/${encodeURIComponent(sessionId)}`, "data-target": id,
          onclick: (event) => { event.preventDefault(); document.getElementById(id)?.scrollIntoView(); document.getElementById(`${id}-title`)?.focus(); }},
          label);
      })),
    section("info", "Connection and statistics", info),
    section("history", "State history", historyState, history, olderHistory),
    section("health", "Health",
      h("div", {class: "actions"},
        h("button", {type: "button", onclick: () => loadHealth(false)}, "Check again"),
        h("button", {type: "button", onclick: () => loadHealth(true)}, "Check with a test message")),
      health),
    section("troubleshoot", "Troubleshooting", trouble),
    webhook.element,
    aiSection(sessionId),
  );
  for (const heading of main.querySelectorAll("section > h2")) heading.tabIndex = -1;

  async function run(label, action) {
    actionsError.replaceChildren();
    try {
      const result = await action();
      if (result && result.message) announce(result.message);
      if (!gone) await refresh();
    } catch (err) {
      actionsError.replaceChildren(notice(`${label}: ${err.message}`, "error"));
    }
  }

  async function logout() {
    const ok = await confirmAction("Log this device out?",
      `${device.alias ?? sessionId} is logged out at WhatsApp and its credentials are wiped: pairing it again needs a new scan on the phone.`,
      "Log out");
    return ok ? post(seg`/devices/${sessionId}/logout`) : null;
  }

  async function remove() {
    const ok = await confirmAction("Delete this device?",
      `${device.alias ?? sessionId} is logged out at WhatsApp and its record, messages and settings are deleted. This cannot be undone.`,
      "Delete device");
    if (!ok) return null;
    const result = await del(seg`/devices/${sessionId}`);
    gone = true;
    announce(`Device ${device.alias ?? sessionId} deleted`);
    location.hash = "#/devices";
    return result;
  }

  function showStatus(value, reason) {
    device.status = value;
    status.replaceChildren("Status: ", statusBadge(value),
      reason ? h("span", {class: "reason"}, ` (${reason})`) : "");
    const wantsPairing = value === "pending";
    if (wantsPairing && !pairing) {
      pairing = pairingPanel(device);
      pairingSlot.replaceChildren(pairing.element);
    } else if (!wantsPairing && pairing) {
      pairing.stop();
      pairing = null;
      pairingSlot.replaceChildren();
    }
  }

  async function refresh() {
    const seenBefore = eventsSeen;
    let d;
    try {
      d = (await get(seg`/devices/${sessionId}`)).data;
    } catch (err) {
      info.replaceChildren(notice(err.status === 404 ? "There is no such device." : err.message, "error"));
      return;
    }
    Object.assign(device, d);
    title.textContent = d.alias;
    document.title = `${d.alias} · wasup`;
    if (eventsSeen === seenBefore) showStatus(d.status, d.statusReason);
    const c = d.connectionInfo ?? {};
    const s = d.statistics ?? {};
    const q = d.outboundQueue ?? {};
    info.replaceChildren(
      facts([["Session id", d.sessionId], ["Device id", String(d.id)], ["User", d.userId],
        ["Phone number", d.phoneNumber], ["Business type", d.businessType],
        ["Description", d.description], ["Connected", c.isConnected ? "yes" : "no"],
        ["Push name", c.pushName], ["Platform", c.platform], ["Last seen", when(c.lastSeen)],
        ["Last connection", when(d.lastConnection)], ["Created", when(d.createdAt)]]),
      h("h3", {}, "Statistics"),
      facts([["Messages sent", String(s.messagesSent ?? 0)],
        ["Messages received", String(s.messagesReceived ?? 0)],
        ["Last activity", when(s.lastActivity)],
        ["Sends waiting", String(q.pending ?? 0)], ["Sends stuck", String(q.stuck ?? 0)]]));
    loadHistory();
    loadHealth(false);
  }

  // The newest page; "Show older changes" appends the next pages (pagination.nextCursor).
  async function loadHistory(before = null) {
    try {
      const query = before ? `?before=${encodeURIComponent(before)}` : "";
      const body = await get(seg`/devices/${sessionId}/history` + query);
      const entries = body.data;
      const items = entries.map((e) => h("li", {class: `to-${e.to}`},
        h("time", {datetime: e.at}, when(e.at)), " ",
        h("span", {class: "transition"}, e.from ? statusBadge(e.from) : "—", " → ", statusBadge(e.to)),
        e.reason ? h("span", {class: "reason"}, ` ${e.reason}`) : ""));
      if (before) {
        history.append(...items);
        if (items.length) {  // the focus goes on to the first older change
          items[0].tabIndex = -1;
          items[0].focus();
        }
      } else {
        history.replaceChildren(...items);
      }
      const next = body.pagination?.hasMore ? body.pagination.nextCursor : null;
      historyState.replaceChildren(history.children.length ? "" : notice("No change of status recorded yet."));
      olderHistory.replaceChildren(next ? h("button", {type: "button", onclick: (event) => {
        event.currentTarget.disabled = true;
        loadHistory(next);
      }}, "Show older changes") : "");
    } catch (err) {
      if (!before) history.replaceChildren();
      historyState.replaceChildren(unavailable(err)
        ? notice("The state history is not available on this server.")
        : notice(`The history could not be loaded: ${err.message}`, "error"));
    }
  }

  async function loadHealth(sendTest) {
    try {
      const report = (await get(seg`/devices/${sessionId}/health` + (sendTest ? "?sendTest=true" : ""))).data;
      health.replaceChildren(
        h("p", {}, "Overall: ", h("span", {class: `verdict verdict-${report.status}`}, report.status),
          ` (checked ${when(report.timestamp)})`),
        h("ul", {class: "checks"}, Object.entries(report.checks ?? {}).map(([name, check]) =>
          h("li", {class: `verdict-${check.status}`},
            h("strong", {}, name), ": ",
            h("span", {class: `verdict verdict-${check.status}`}, check.status ?? "?"), " ",
            check.message ?? (check.value !== undefined ? String(check.value) : ""))))); 
    } catch (err) {
      health.replaceChildren(unavailable(err)
        ? notice("Health checks are not available on this server.")
        : notice(`Health could not be checked: ${err.message}`, "error"));
    }
    loadTroubleshooting();
  }

  async function loadTroubleshooting() {
    try {
      const report = (await get(seg`/devices/${sessionId}/troubleshoot`)).data;
      const text = (item) => (typeof item === "string" ? item : item.message ?? item.explanation ?? JSON.stringify(item));
      trouble.replaceChildren(
        h("h3", {}, "Issues"),
        report.issues.length ? h("ul", {}, report.issues.map((i) => h("li", {}, text(i))))
          : h("p", {}, "No issue found."),
        h("h3", {}, "Recommendations"),
        report.recommendations.length
          ? h("ul", {}, report.recommendations.map((r) => h("li", {}, text(r))))
          : h("p", {}, "Nothing to do."));
    } catch (err) {
      trouble.replaceChildren(unavailable(err)
        ? notice("Troubleshooting is not available on this server.")
        : notice(`Troubleshooting failed: ${err.message}`, "error"));
    }
  }

  const unsubscribe = subscribe((event) => {
    if (event.sessionId !== sessionId || event.type !== "device_status") return;
    eventsSeen += 1;
    showStatus(event.data.to, event.data.reason);
    if (event.data.from !== event.data.to) announce(`${device.alias ?? sessionId} is now ${event.data.to}`);
    refresh();
  });
  const forgetReconnect = onReconnect(() => { if (!gone) refresh(); });
  refresh();
  return () => {
    unsubscribe();
    forgetReconnect();
    webhook.stop();
    if (pairing) pairing.stop();
  };
}
