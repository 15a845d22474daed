// The devices page: every device with its live status, filters by user and status, counts
// per status, and the form that creates a device (then opens it to pair).

import {ApiError, get, post, seg} from "./api.js";
import {announce, field, h, notice, section, statusBadge, when} from "./dom.js";
import {onReconnect, subscribe} from "./events.js";

// The API key of a device this tab just created, shown once on its page (memory only).
export const createdKeys = new Map();

export const STATUSES = ["pending", "qr_timeout", "connecting", "connected", "disconnected",
  "logged_out"];

export function devicesPage(main) {
  let devices = [];
  let loaded = false;
  const userFilter = h("select", {name: "user"}, h("option", {value: ""}, "All users"));
  const statusFilter = h("select", {name: "status"}, h("option", {value: ""}, "All statuses"),
    STATUSES.map((s) => h("option", {value: s}, s)));
  const counts = h("ul", {class: "counts", "aria-label": "Devices per status"});
  const list = h("ul", {class: "devices", "aria-label": "Devices"});
  const shown = h("p", {class: "shown", "aria-live": "polite"});
  const listError = h("div");
  const userHealth = h("div", {"aria-live": "polite"});
  const healthButton = h("button", {type: "button", hidden: true, onclick: () => checkUser()},
    "Check this user's devices");

  main.append(
    h("h1", {}, "Devices"),
    counts,
    createForm(),
    section("device-list", "All devices",
      h("div", {class: "filters"},
        field("User", userFilter),
        field("Status", statusFilter),
        h("button", {type: "button", onclick: () => load()}, "Refresh"),
        healthButton),
      userHealth, shown, listError, list),
  );

  function render() {
    const byStatus = Object.fromEntries(STATUSES.map((s) => [s, 0]));
    for (const d of devices) byStatus[d.status] = (byStatus[d.status] ?? 0) + 1;
    counts.replaceChildren(
      h("li", {"data-status": "all"}, h("span", {class: "count"}, String(devices.length)), " devices"),
      ...STATUSES.map((s) => h("li", {"data-status": s},
        h("span", {class: "count"}, String(byStatus[s])), " ", statusBadge(s))));

    const users = [...new Set(devices.map((d) => d.userId))].sort();
    const chosen = userFilter.value;
    userFilter.replaceChildren(h("option", {value: ""}, "All users"),
      users.map((u) => h("option", {value: u, selected: u === chosen}, u)));
    userFilter.value = users.includes(chosen) ? chosen : "";

    const visible = devices.filter((d) =>
      (!userFilter.value || d.userId === userFilter.value)
      && (!statusFilter.value || d.status === statusFilter.value));
    shown.textContent = loaded ? `${visible.length} of ${devices.length} devices shown` : "Loading…";
    list.replaceChildren(...visible.map(deviceCard));
    if (loaded && devices.length === 0) list.append(h("li", {class: "empty"}, "No device yet: create one above."));
  }

  async function load() {
    try {
      devices = await allDevices();
      loaded = true;
      listError.replaceChildren();
    } catch (err) {
      listError.replaceChildren(notice(`The devices could not be loaded: ${err.message}`, "error"));
    }
    render();
  }

  // GET /devices pages by id, 100 at most a page: every page, in order.
  async function allDevices() {
    const found = [];
    for (let page = 1; ; page += 1) {
      const answer = await get(`/devices?limit=100&page=${page}`);
      found.push(...answer.data);
      if (answer.data.length === 0 || found.length >= answer.pagination.total) return found;
    }
  }

  // GET /users/{userId}/health: how each of the chosen user's devices is doing.
  async function checkUser() {
    const user = userFilter.value;
    try {
      const report = (await get(seg`/users/${user}/health`)).data;
      const summary = report.summary ?? {};
      userHealth.replaceChildren(h("div", {class: "card"},
        h("h3", {}, `Health of ${user}'s devices`),
        h("p", {}, `${report.totalDevices} devices: ${summary.pass ?? 0} pass, ${summary.warn ?? 0} warn, ${summary.fail ?? 0} fail`),
        h("ul", {class: "checks"}, (report.healthChecks ?? []).map((r) => h("li", {},
          h("a", {href: `#/devices/${encodeURIComponent(r.sessionId ?? r.deviceId)}`}, r.sessionId ?? r.deviceId),
          " ", h("span", {class: `verdict verdict-${r.status}`}, r.status))))));
    } catch (err) {
      userHealth.replaceChildren(notice(err.status === 404 && err.code === "NOT_FOUND"
        ? "Health checks are not available on this server."
        : `Health could not be checked: ${err.message}`, err.status === 404 ? "info" : "error"));
    }
  }

  userFilter.addEventListener("change", () => {
    healthButton.hidden = !userFilter.value;
    userHealth.replaceChildren();
    render();
  });
  statusFilter.addEventListener("change", render);
  const unsubscribe = subscribe((event) => {
    if (event.type !== "device_status") return;
    const device = devices.find((d) => d.sessionId === event.sessionId);
    if (!device) {
      load();  // created elsewhere
      return;
    }
    device.status = event.data.to;
    device.statusReason = event.data.reason;
    device.isConnected = event.data.to === "connected";
    if (event.data.to === "connected") device.lastConnection = event.timestamp;
    if (event.data.from !== event.data.to) announce(`${device.alias} is now ${event.data.to}`);
    render();
  });
  const forgetReconnect = onReconnect(load);
  render();
  load();
  return () => {
    unsubscribe();
    forgetReconnect();
  };
}

function deviceCard(d) {
  return h("li", {class: "device card", "data-session": d.sessionId},
    h("h3", {}, h("a", {href: `#/devices/${encodeURIComponent(d.sessionId)}`}, d.alias)),
    h("dl", {class: "facts"},
      h("dt", {}, "Status"), h("dd", {class: "status"}, statusBadge(d.status),
        d.statusReason ? h("span", {class: "reason"}, ` ${d.statusReason}`) : null),
      h("dt", {}, "User"), h("dd", {}, d.userId),
      h("dt", {}, "Session"), h("dd", {class: "mono"}, d.sessionId),
      h("dt", {}, "Phone"), h("dd", {}, d.phoneNumber ?? "—"),
      h("dt", {}, "Last connection"), h("dd", {}, when(d.lastConnection))));
}

function createForm() {
  const userId = h("input", {name: "userId", required: true, maxlength: 100, autocomplete: "off"});
  const alias = h("input", {name: "alias", required: true, maxlength: 100, autocomplete: "off"});
  const phone = h("input", {name: "phoneNumber", type: "tel", autocomplete: "off"});
  const description = h("input", {name: "description", autocomplete: "off"});
  const error = h("div");
  const submit = h("button", {type: "submit", class: "primary", id: "create-device"}, "Create device");
  const form = h("form", {class: "card create", method: "post", "aria-labelledby": "create-title"},
    h("h2", {id: "create-title"}, "New device"),
    h("div", {class: "grid"},
      field("User id", userId, "Your application's user the device belongs to."),
      field("Alias", alias, "A name for this WhatsApp account, unique per user."),
      field("Phone number (optional)", phone),
      field("Description (optional)", description)),
    error, submit);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.replaceChildren();
    const body = {userId: userId.value.trim(), alias: alias.value.trim()};
    if (phone.value.trim()) body.phoneNumber = phone.value.trim();
    if (description.value.trim()) body.description = description.value.trim();
    submit.disabled = true;
    try {
      const created = (await post("/devices", body)).data;
      announce(`Device ${created.alias} created. Scan its QR code.`);
      createdKeys.set(created.sessionId, created.apiKey);
      location.hash = `#/devices/${encodeURIComponent(created.sessionId)}`;
    } catch (err) {
      const what = err instanceof ApiError && err.status === 400 ? "Check the form" : "Not created";
      error.replaceChildren(notice(`${what}: ${err.message}`, "error"));
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}
