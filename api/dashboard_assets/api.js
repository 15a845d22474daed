// The HTTP API under /api/whatsapp, with the operator token from sessionStorage as
// X-API-TOKEN. Errors come back as ApiError with the envelope's status, code and message.

const PREFIX = "/api/whatsapp";
const KEY = "wasup.token";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function token() {
  return sessionStorage.getItem(KEY);
}

export function setToken(value) {
  if (value) sessionStorage.setItem(KEY, value);
  else sessionStorage.removeItem(KEY);
}

// Listeners called when the server refuses the token (401): the dashboard signs out.
const unauthorized = new Set();
export function onUnauthorized(listener) {
  unauthorized.add(listener);
}

// A path segment, escaped: seg`/devices/${id}/qr`.
export function seg(strings, ...values) {
  return strings.reduce((out, s, i) => out + s + (i < values.length ? encodeURIComponent(values[i]) : ""), "");
}

// The decoded body ({success, data, ...}); throws ApiError for any error answer.
export async function request(method, path, body, {tokenOverride} = {}) {
  const headers = {"X-API-TOKEN": tokenOverride ?? token() ?? "", "Accept": "application/json"};
  const init = {method, headers, cache: "no-store"};
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(PREFIX + path, init);
  } catch (err) {
    throw new ApiError(0, "NETWORK", `wasup cannot be reached (${err.message})`);
  }
  let json = null;
  try {
    json = await response.json();
  } catch {
    json = null;
  }
  if (!response.ok || !json || json.success === false) {
    if (response.status === 401 && tokenOverride === undefined) unauthorized.forEach((l) => l());
    throw new ApiError(response.status, json?.code ?? "HTTP_ERROR",
      json?.error ?? `HTTP ${response.status}`);
  }
  return json;
}

export const get = (path) => request("GET", path);
export const post = (path, body = {}) => request("POST", path, body);
export const put = (path, body) => request("PUT", path, body);
export const del = (path) => request("DELETE", path);
