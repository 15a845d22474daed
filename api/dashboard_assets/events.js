// The live event stream: one WebSocket to "/" for the whole dashboard, authenticated with
// the subprotocols ["wasup", token] (the token is never echoed back nor put in the URL).
// Reconnects with a growing delay; keeps the last MAX_KEPT events for the event monitor.

import {token} from "./api.js";

export const MAX_KEPT = 500;

const listeners = new Set();
const stateListeners = new Set();
const reconnectListeners = new Set();
let opened = 0;
export const kept = [];
let socket = null;
let retry = 0;
let timer = null;
let wanted = false;
export let connected = false;

// listener(event) for every event; returns the function that removes it.
export function subscribe(listener) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

// listener(isConnected, detail) when the stream opens or closes.
export function onState(listener) {
  stateListeners.add(listener);
  listener(connected, connected ? "Live" : "Offline");
  return () => stateListeners.delete(listener);
}

// listener() when the stream opens again after it was lost: events may have been missed,
// so a page reloads what it shows. Returns the function that removes it.
export function onReconnect(listener) {
  reconnectListeners.add(listener);
  return () => reconnectListeners.delete(listener);
}

function setState(isConnected, detail) {
  connected = isConnected;
  stateListeners.forEach((l) => l(isConnected, detail));
}

export function start() {
  wanted = true;
  open();
}

export function stop() {
  wanted = false;
  window.clearTimeout(timer);
  if (socket) socket.close(1000, "signed out");
  socket = null;
  opened = 0;
  kept.length = 0;
  setState(false, "Offline");
}

function open() {
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/`;
  let ws;
  try {
    ws = new WebSocket(url, ["wasup", token()]);
  } catch {
    setState(false, "Live updates need a token made of letters, digits and -._~");
    return;
  }
  socket = ws;
  ws.addEventListener("open", () => {
    retry = 0;
    opened += 1;
    setState(true, "Live");
    if (opened > 1) reconnectListeners.forEach((l) => l());
  });
  ws.addEventListener("message", (message) => {
    let event;
    try {
      event = JSON.parse(message.data);
    } catch {
      return;
    }
    kept.push(event);
    if (kept.length > MAX_KEPT) kept.splice(0, kept.length - MAX_KEPT);
    listeners.forEach((l) => l(event));
  });
  ws.addEventListener("close", () => {
    if (socket !== ws) return;
    socket = null;
    if (!wanted) return;
    const delay = Math.min(30, 2 ** retry) * 1000;
    retry += 1;
    setState(false, `Reconnecting in ${delay / 1000} s`);
    timer = window.setTimeout(open, delay);
  });
}
