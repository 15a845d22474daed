// The dashboard's entry point: sign-in, the navigation and the pages (by the URL's hash:
// #/devices, #/devices/<sessionId>, #/events).

import {ApiError, onUnauthorized, request, setToken, token} from "./api.js";
import {detailPage} from "./detail.js";
import {devicesPage} from "./devices.js";
import {field, h} from "./dom.js";
import * as events from "./events.js";
import {monitorPage} from "./monitor.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
let cleanup = null;

function signInPage() {
  const input = h("input", {type: "password", name: "token", autocomplete: "current-password",
    required: true, spellcheck: "false"});
  const error = h("p", {class: "notice error", role: "alert", hidden: true});
  const form = h("form", {class: "card signin", method: "post", "aria-labelledby": "signin-title"},
    h("h1", {id: "signin-title"}, "Sign in to wasup"),
    field("Operator token", input,
      "WASUP_API_TOKEN, or the token wasup printed at its first start. Kept in this tab only."),
    error,
    h("button", {type: "submit", class: "primary"}, "Sign in"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    const value = input.value.trim();
    try {
      await request("GET", "/sessions", undefined, {tokenOverride: value});
      setToken(value);
      signedIn();
      location.hash = "#/devices";
      route();
    } catch (err) {
      error.textContent = err instanceof ApiError && err.status === 401
        ? "That token was refused." : `Sign-in failed: ${err.message}`;
      error.hidden = false;
      input.focus();
    }
  });
  main.replaceChildren(form);
  input.focus();
  return null;
}

function signedIn() {
  nav.hidden = false;
  events.start();
}

function signOut() {
  setToken(null);
  events.stop();
  nav.hidden = true;
  if (cleanup) cleanup();
  cleanup = null;
  history.replaceState(null, "", "/dashboard");
  signInPage();
}

function route() {
  if (cleanup) cleanup();
  cleanup = null;
  if (!token()) {
    signInPage();
    return;
  }
  const hash = decodeURIComponent(location.hash || "#/devices");
  const detail = /^#\/devices\/(.+)$/.exec(hash);
  let page = devicesPage;
  let arg;
  if (detail) {
    page = detailPage;
    arg = detail[1];
  } else if (hash === "#/events") {
    page = monitorPage;
  }
  for (const link of nav.querySelectorAll("a[href^='#']")) {
    if (hash.startsWith(link.getAttribute("href"))) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  main.replaceChildren();
  cleanup = page(main, arg);
  const heading = main.querySelector("h1");
  if (heading && document.activeElement === document.body) main.focus({preventScroll: true});
}

const live = document.getElementById("live");
events.onState((isConnected, detail) => {
  live.textContent = detail;
  live.classList.toggle("on", isConnected);
});
document.getElementById("sign-out").addEventListener("click", signOut);
onUnauthorized(signOut);
window.addEventListener("hashchange", route);
if (token()) signedIn();
route();
