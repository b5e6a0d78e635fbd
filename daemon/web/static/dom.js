// Tiny DOM helpers. Text from the daemon (labels, log lines, reasons) only ever goes in as text, never as HTML.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") el.className = value;
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined) el.setAttribute(name, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child !== null && child !== undefined) el.append(child instanceof Node ? child : document.createTextNode(child));
  }
  return el;
}

// A panel's body and its error line: errors are shown in words; the last good content stays visible under them.
export class Panel {
  constructor(id) {
    this.root = document.getElementById(id);
    this.body = this.root.querySelector(".body");
    this.error = this.root.querySelector(".error");
    this.filled = false;
  }

  show(...nodes) {
    this.body.replaceChildren(...nodes);
    this.filled = true;
    this.clearError();
  }

  fail(err) {
    const message = err && err.message ? err.message : String(err);
    this.error.textContent = `⚠ ${message}`;
    this.error.hidden = false;
    if (!this.filled) this.body.replaceChildren(h("p", { class: "muted" }, "Nothing to show until this is resolved."));
  }

  clearError() {
    this.error.hidden = true;
    this.error.textContent = "";
  }
}

export function fmtMs(value) {
  return value === null || value === undefined ? "–" : `${Number(value).toFixed(value < 10 ? 1 : 0)} ms`;
}

export function fmtMiB(value) {
  return value === null || value === undefined ? "–" : `${Math.round(Number(value))} MiB`;
}

export function fmtTime(epochSeconds) {
  if (!epochSeconds) return "–";
  return new Date(epochSeconds * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

export function fmtDuration(seconds) {
  const s = Math.floor(seconds || 0);
  const d = Math.floor(s / 86400);
  const hh = Math.floor((s % 86400) / 3600);
  const mm = Math.floor((s % 3600) / 60);
  if (d) return `${d} d ${hh} h`;
  if (hh) return `${hh} h ${mm} min`;
  return `${mm} min ${s % 60} s`;
}

export function yesNo(flag) {
  return h("span", { class: flag ? "ok" : "bad" }, flag ? "yes" : "no");
}
