// DOM helpers. Everything shown goes through textContent or attributes: no HTML is ever
// built from data.

// h("button", {type: "button", onclick: fn}, "Delete") -> an element. Attributes named on*
// become listeners; `false`/null/undefined attributes are left out; children are nodes or
// strings (as text).
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "text") el.textContent = String(value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

// A <dl> of [term, value] pairs; a null value shows as "—".
export function facts(pairs) {
  const dl = h("dl", {class: "facts"});
  for (const [term, value] of pairs) {
    dl.append(h("dt", {}, term), h("dd", {}, value === null || value === undefined ? "—" : value));
  }
  return dl;
}

// A labelled form field: h("label") wrapping the text and the control.
export function field(label, control, hint) {
  const id = control.id || `f-${Math.random().toString(36).slice(2, 10)}`;
  control.id = id;
  const parts = [h("label", {for: id}, label), control];
  if (hint) {
    const hintId = `${id}-hint`;
    control.setAttribute("aria-describedby", hintId);
    parts.push(h("small", {id: hintId, class: "hint"}, hint));
  }
  return h("div", {class: "field"}, parts);
}

export function statusBadge(status) {
  return h("span", {class: `badge status-${status}`, "data-status": status}, status);
}

// "2026-11-30T14:00:00.000Z" -> local date and time, or "—".
export function when(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
}

// Tell screen readers about a change (the page's polite live region).
export function announce(text) {
  const region = document.getElementById("announcer");
  region.textContent = "";
  window.setTimeout(() => { region.textContent = text; }, 50);
}

// A section with a heading (level 2) and an id, for in-page links.
export function section(id, title, ...children) {
  return h("section", {id, "aria-labelledby": `${id}-title`},
    h("h2", {id: `${id}-title`}, title), children);
}

// A message for an error or an empty state; role=alert for errors.
export function notice(text, kind = "info") {
  return h("p", {class: `notice ${kind}`, role: kind === "error" ? "alert" : null}, text);
}
