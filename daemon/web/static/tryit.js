// "Try it": send a photo to one of the vision routes, draw the boxes over it and show the JSON answer.

import { api } from "./api.js";
import { Panel, h, svg } from "./dom.js";

const ROUTES = {
  objects: { path: "/v1/vision/detection", field: "image" },
  faces: { path: "/v1/vision/face", field: "image" },
  scene: { path: "/v1/vision/scene", field: "image" },
  plates: { path: "/v1/vision/alpr", field: "upload" },
};
const COLORS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45", "#9a6324"];

function colorFor(label) {
  let sum = 0;
  for (const ch of label) sum += ch.codePointAt(0);
  return COLORS[sum % COLORS.length];
}

export class TryItPanel {
  constructor() {
    this.panel = new Panel("tryit");
    this.panel.filled = true; // the form is the content: an error is shown above it, never instead of it
    this.form = document.getElementById("tryit-form");
    this.input = document.getElementById("tryit-file");
    this.route = document.getElementById("tryit-route");
    this.drop = document.getElementById("tryit-drop");
    this.result = document.getElementById("tryit-result");
    this.file = null;
    this.input.addEventListener("change", () => this.choose(this.input.files[0]));
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.run();
    });
    for (const name of ["dragenter", "dragover"]) {
      this.drop.addEventListener(name, (event) => {
        event.preventDefault();
        this.drop.classList.add("hover");
      });
    }
    for (const name of ["dragleave", "drop"]) {
      this.drop.addEventListener(name, () => this.drop.classList.remove("hover"));
    }
    this.drop.addEventListener("drop", (event) => {
      event.preventDefault();
      const file = event.dataTransfer.files[0];
      if (file) this.choose(file, true);
    });
  }

  choose(file, run = false) {
    this.file = file || null;
    this.drop.querySelector(".name").textContent = file ? file.name : "no photo chosen";
    if (file && run) this.run();
  }

  async run() {
    if (!this.file) {
      this.panel.fail(new Error("choose or drop a photo first"));
      return;
    }
    const route = ROUTES[this.route.value];
    const form = new FormData();
    form.append(route.field, this.file, this.file.name);
    this.result.dataset.state = "busy";
    this.panel.clearError();
    this.result.replaceChildren(h("p", { class: "muted" }, `sending ${this.file.name} to ${route.path}…`));
    try {
      const answer = await api(route.path, { method: "POST", body: form });
      this.result.replaceChildren(...(await this.draw(answer)));
      this.result.dataset.state = "done";
    } catch (err) {
      this.result.replaceChildren();
      this.result.dataset.state = "error";
      this.panel.fail(err);
    }
  }

  async draw(answer) {
    const url = URL.createObjectURL(this.file);
    if (this.url) URL.revokeObjectURL(this.url);
    this.url = url;
    const img = h("img", { src: url, alt: "the photo sent" });
    await img.decode().catch(() => {});
    const width = img.naturalWidth || 1;
    const height = img.naturalHeight || 1;
    const predictions = answer.predictions || [];
    const boxes = predictions.filter((p) => p.x_max !== undefined).map((p) => {
      const label = p.label || p.userid || "object";
      const color = colorFor(label);
      const stroke = Math.max(2, Math.round(Math.min(width, height) / 200));
      const size = Math.max(12, Math.round(Math.max(width, height) / 40));
      const caption = `${label} ${Math.round((p.confidence || 0) * 100)}%`;
      // The caption sits on a filled tab above the box (inside it when the box touches the top edge).
      const tabY = p.y_min - size - 4 >= 0 ? p.y_min - size - 4 : p.y_min;
      return svg("g", { class: "box", "data-label": label },
        svg("rect", { x: p.x_min, y: p.y_min, width: p.x_max - p.x_min, height: p.y_max - p.y_min,
          fill: "none", stroke: color, "stroke-width": stroke }),
        svg("rect", { x: p.x_min, y: tabY, width: Math.round(caption.length * size * 0.62) + 6, height: size + 4,
          fill: color }),
        svg("text", { x: p.x_min + 3, y: tabY + size, fill: "#fff", "font-size": size, "font-weight": "bold" },
          caption));
    });
    const overlay = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "boxes" }, boxes);
    const labels = predictions.length
      ? predictions.map((p) => h("li", { "data-label": p.label || p.userid || "object" },
        `${p.label || p.userid || "object"} — ${Math.round((p.confidence || 0) * 100)} %`))
      : [h("li", {}, answer.label ? `${answer.label} — ${Math.round((answer.confidence || 0) * 100)} %`
        : answer.message || "nothing found")];
    const timing = `${answer.inferenceDevice || ""} · inference ${answer.inferenceMs ?? "?"} ms · total ${answer.processMs ?? "?"} ms`;
    return [
      h("div", { class: "picture" }, img, overlay),
      h("div", { class: "answer" },
        h("p", {}, h("strong", {}, answer.message || "done"), h("br"), h("span", { class: "small muted" }, timing)),
        h("ul", { class: "labels" }, labels),
        h("details", {}, h("summary", {}, "JSON"), h("pre", { class: "json" }, JSON.stringify(answer, null, 2)))),
    ];
  }
}
