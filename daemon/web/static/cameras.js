// Camera tiles with live annotated views, and the recent-events list.
//
// The live view is read with fetch() and split into JPEG parts here, rather than given to an <img src=…mjpeg>:
// fetch can send the API key in a header (an <img> cannot, and a key in the URL ends up in history and proxy
// logs), and a refusal (wrong key, too many viewers, unknown camera) arrives as JSON whose message the tile shows.

import { api } from "./api.js";
import { Panel, fmtTime, h } from "./dom.js";

const RETRY_MS = [1000, 2000, 5000, 10000];

function indexOf(haystack, needle, from) {
  outer: for (let i = from; i <= haystack.length - needle.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

// Reads multipart/x-mixed-replace parts that carry a Content-Length header (as the daemon sends them).
async function readParts(response, onFrame, signal) {
  const reader = response.body.getReader();
  const crlf2 = new Uint8Array([13, 10, 13, 10]);
  let buffer = new Uint8Array(0);
  const decoder = new TextDecoder();
  while (!signal.aborted) {
    const { value, done } = await reader.read();
    if (done) return;
    const merged = new Uint8Array(buffer.length + value.length);
    merged.set(buffer);
    merged.set(value, buffer.length);
    buffer = merged;
    for (;;) {
      const end = indexOf(buffer, crlf2, 0);
      if (end < 0) break;
      const head = decoder.decode(buffer.subarray(0, end));
      const match = /content-length:\s*(\d+)/i.exec(head);
      if (!match) throw new Error("the live view sent a part without Content-Length");
      const length = Number(match[1]);
      const start = end + 4;
      if (buffer.length < start + length) break;
      onFrame(buffer.slice(start, start + length));
      buffer = buffer.slice(start + length);
    }
  }
}

class Tile {
  constructor(name) {
    this.name = name;
    this.frames = 0;
    this.image = h("img", { alt: `live view of camera ${name}`, class: "live", "data-frames": "0" });
    this.overlay = h("p", { class: "overlay" }, "connecting…");
    this.facts = h("p", { class: "facts small" });
    this.root = h("article", { class: "tile", "data-camera": name },
      h("header", {}, h("h3", {}, name), (this.badge = h("span", { class: "badge" }, "…"))),
      h("div", { class: "view" }, this.image, this.overlay),
      this.facts);
    this.controller = null;
    this.url = null;
    this.failures = 0;
  }

  update(state) {
    const status = state.status || (state.online ? "online" : "offline");
    this.badge.textContent = status;
    this.badge.className = `badge ${status === "online" ? "ok" : "bad"}`;
    const objects = Object.entries(state.objects || {}).filter(([, n]) => n > 0).map(([label, n]) => `${n} ${label}`);
    const parts = [
      state.fps !== undefined ? `${state.fps} fps` : null,
      state.detect_fps !== undefined ? `detecting ${state.detect_fps}/s` : null,
      objects.length ? `in view: ${objects.join(", ")}` : "nothing in view",
    ];
    if (state.last_error && status !== "online") parts.push(`last error: ${state.last_error}`);
    this.facts.textContent = parts.filter(Boolean).join(" · ");
    if (status === "invalid" || status === "disabled") {
      this.stop();
      this.say(status === "invalid" ? `not running: ${state.last_error}` : "disabled in the configuration");
    } else if (!this.controller) {
      this.start();
    } else if (status !== "online" && !this.frames) {
      this.say(`camera offline${state.last_error ? `: ${state.last_error}` : ""}`);
    }
  }

  say(text) {
    this.overlay.textContent = text;
    this.overlay.hidden = !text;
  }

  async start() {
    this.stop();
    const controller = new AbortController();
    this.controller = controller;
    try {
      const response = await api(`/cameras/${encodeURIComponent(this.name)}/stream.mjpeg`,
        { as: "response", signal: controller.signal });
      this.failures = 0;
      await readParts(response, (jpeg) => this.show(jpeg), controller.signal);
      if (!controller.signal.aborted) this.say("the live view ended; reconnecting…");
    } catch (err) {
      if (controller.signal.aborted) return;
      this.say(`live view unavailable: ${err.message}`);
    }
    if (controller.signal.aborted || this.controller !== controller) return;
    const delay = RETRY_MS[Math.min(this.failures++, RETRY_MS.length - 1)];
    this.controller = null;
    this.retry = setTimeout(() => { if (!this.controller) this.start(); }, delay);
  }

  show(jpeg) {
    const url = URL.createObjectURL(new Blob([jpeg], { type: "image/jpeg" }));
    const previous = this.url;
    this.url = url;
    this.image.src = url;
    if (previous) URL.revokeObjectURL(previous);
    this.frames += 1;
    this.image.dataset.frames = String(this.frames);
    this.say("");
  }

  stop() {
    clearTimeout(this.retry);
    if (this.controller) this.controller.abort();
    this.controller = null;
  }
}

export class CamerasPanel {
  constructor() {
    this.panel = new Panel("cameras");
    this.grid = h("div", { class: "tiles" });
    this.events = h("ol", { class: "events" });
    this.tiles = new Map();
    this.thumbs = new Map(); // event id -> {key, url}
    document.addEventListener("visibilitychange", () => {
      // No one looks at a hidden tab: stop pulling frames, start again when it is shown.
      for (const tile of this.tiles.values()) document.hidden ? tile.stop() : tile.start();
    });
  }

  render(status) {
    const cameras = status.cameras || {};
    const names = Object.keys(cameras).sort();
    for (const [name, tile] of this.tiles) {
      if (!names.includes(name)) {
        tile.stop();
        this.tiles.delete(name);
      }
    }
    for (const name of names) {
      if (!this.tiles.has(name)) this.tiles.set(name, new Tile(name));
      if (!document.hidden) this.tiles.get(name).update(cameras[name]);
    }
    const intro = names.length ? null : h("p", { class: "muted" },
      "No cameras configured. Add a `cameras:` section to the config (see the README) to watch streams here.");
    if (!this.panel.filled || this.grid.children.length !== names.length) {
      this.grid.replaceChildren(...names.map((n) => this.tiles.get(n).root));
      this.panel.show(intro || this.grid, h("h3", {}, "Recent events"), this.events);
    }
    if (status.mqtt) {
      this.mqtt = status.mqtt.connected ? "MQTT connected" : `MQTT not connected${status.mqtt.last_error ? `: ${status.mqtt.last_error}` : ""}`;
    }
  }

  async renderEvents() {
    const { events } = await api("/cameras/events?limit=20");
    if (!events.length) {
      this.events.replaceChildren(h("li", { class: "muted" }, "No objects seen yet."));
      return;
    }
    this.events.replaceChildren(...events.map((e) => {
      const thumb = h("img", { class: "thumb", alt: `${e.label} on ${e.camera}` });
      if (e.snapshot) this.thumbnail(e, thumb);
      return h("li", { "data-event": e.id, "data-label": e.label },
        e.snapshot ? thumb : h("span", { class: "thumb none" }, "no snapshot"),
        h("div", {},
          h("strong", {}, e.label), ` ${Math.round(e.top_score * 100)} % · ${e.camera}`,
          h("br"),
          h("span", { class: "small muted" },
            `${fmtTime(e.start_time)} – ${e.end_time ? fmtTime(e.end_time) : "still in view"}`)));
    }));
  }

  // Snapshots are fetched (with the key header) once per version of the event and kept as object URLs.
  async thumbnail(event, img) {
    const key = `${event.type}:${event.top_score}`;
    const cached = this.thumbs.get(event.id);
    if (cached && cached.key === key) {
      img.src = cached.url;
      return;
    }
    try {
      const blob = await api(event.snapshot, { as: "blob" });
      const url = URL.createObjectURL(blob);
      if (cached) URL.revokeObjectURL(cached.url);
      this.thumbs.set(event.id, { key, url });
      img.src = url;
    } catch (err) {
      img.alt = `snapshot unavailable: ${err.message}`;
    }
    if (this.thumbs.size > 60) {
      const [oldest] = this.thumbs.keys();
      URL.revokeObjectURL(this.thumbs.get(oldest).url);
      this.thumbs.delete(oldest);
    }
  }

  stopAll() {
    for (const tile of this.tiles.values()) tile.stop();
  }
}
