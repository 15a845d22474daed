// The live event monitor: every event the stream brought since sign-in (the last few
// hundred), newest first, filtered by type and device, with pause and clear.

import {field, h, when} from "./dom.js";
import {kept, subscribe} from "./events.js";

const SHOWN = 200;
// Longer strings (a QR code's PNG data URL) are shortened on screen.
const LONGEST = 160;

function shorten(key, value) {
  return typeof value === "string" && value.length > LONGEST
    ? `${value.slice(0, LONGEST)}… (${value.length} characters)` : value;
}

export function monitorPage(main) {
  const type = h("input", {name: "type", autocomplete: "off", list: "event-types"});
  const device = h("input", {name: "device", autocomplete: "off"});
  const pause = h("button", {type: "button", "aria-pressed": "false"}, "Pause");
  const list = h("ol", {class: "events", "aria-label": "Events, newest first"});
  const count = h("p", {"aria-live": "polite", class: "shown"});
  const types = h("datalist", {id: "event-types"});
  let paused = false;

  main.append(h("h1", {}, "Event monitor"),
    h("p", {}, "Events arrive over the WebSocket as they happen; the newest is on top. "
      + "Filter by type (device_status, qr_code, message_received…) or device."),
    h("div", {class: "filters"},
      field("Type", type),
      field("Device (session id)", device),
      pause,
      h("button", {type: "button", onclick: () => { kept.length = 0; render(); }}, "Clear")),
    types, count, list);

  function matches(event) {
    return (!type.value.trim() || event.type === type.value.trim())
      && (!device.value.trim() || (event.sessionId ?? "").includes(device.value.trim()));
  }

  function item(event) {
    return h("li", {class: "event", "data-type": event.type},
      h("div", {class: "event-head"},
        h("time", {datetime: event.timestamp}, when(event.timestamp)), " ",
        h("strong", {}, event.type), " ",
        h("span", {class: "mono"}, event.sessionId ?? "")),
      h("pre", {}, JSON.stringify(event.data, shorten, 2)));
  }

  function render() {
    const chosen = kept.filter(matches).slice(-SHOWN).reverse();
    list.replaceChildren(...chosen.map(item));
    count.textContent = `${chosen.length} events shown${paused ? " (paused)" : ""}`;
    types.replaceChildren(...[...new Set(kept.map((e) => e.type))].sort()
      .map((t) => h("option", {value: t})));
  }

  pause.addEventListener("click", () => {
    paused = !paused;
    pause.setAttribute("aria-pressed", String(paused));
    pause.textContent = paused ? "Resume" : "Pause";
    render();
  });
  type.addEventListener("input", render);
  device.addEventListener("input", render);
  const unsubscribe = subscribe(() => { if (!paused) render(); });
  render();
  return unsubscribe;
}
