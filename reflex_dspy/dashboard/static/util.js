// Small helpers shared by the views: DOM building (text only, never innerHTML: prompts and
// model outputs are untrusted), number formats matching the CLI, and the API client.

/** h("div", {class: "x", onclick: f}, "text", child, [more]) → an element; strings become text nodes. */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "style") for (const [k, v] of Object.entries(value)) el.style.setProperty(k, v);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export const score = (v, digits = 3) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits));
export const signed = (v, digits = 3) =>
  v === null || v === undefined ? "–" : (v >= 0 ? "+" : "") + Number(v).toFixed(digits);

/** 12345 → "12.3K", like reflex_dspy.result.format_tokens. */
export function tokens(n) {
  n = n || 0;
  if (n >= 1e6) return (n / 1e6).toFixed(1) + "M";
  if (n >= 1e3) return (n / 1e3).toFixed(1) + "K";
  return String(n);
}

export function when(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const pad = (x) => String(x).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

export function seconds(s) {
  if (s === null || s === undefined) return "–";
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  return `${m} min ${Math.round(s - 60 * m)} s`;
}

export function badge(status) {
  return h("span", { class: `badge status-${status}`, "data-status": status }, status);
}

export const PHASES = ["structural", "iterative", "fewshot", "pdo", "gepa"];
export const phaseClass = (phase) => `phase-${PHASES.includes(phase) ? phase : "other"}`;

/** The server could not be reached at all (as opposed to an error answer). */
export class ServerDown extends Error {}

/** An error answer from the API, with its one-line message. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, { cache: "no-store", ...options });
  } catch (err) {
    throw new ServerDown(String(err && err.message ? err.message : err));
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) throw new ApiError(response.status, (body && body.error) || `HTTP ${response.status}`);
  return body;
}

export function toast(text, kind = "info", link = null) {
  const root = document.getElementById("toasts");
  const el = h("div", { class: `toast toast-${kind}`, role: "status" }, text, link);
  root.append(el);
  setTimeout(() => el.remove(), kind === "error" ? 12000 : 6000);
}
