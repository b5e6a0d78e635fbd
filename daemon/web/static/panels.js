// Hardware and models panels, and the live settings of the detection module (default model, min_confidence).

import { api, postForm } from "./api.js";
import { Panel, fmtMiB, fmtMs, h, yesNo } from "./dom.js";

const MODULE = "ObjectDetectionPerch";

export class HardwarePanel {
  constructor() {
    this.panel = new Panel("hardware");
  }

  render(status, history) {
    const board = (status.hardware && status.hardware.board) || {};
    const models = (status.models || []).filter((m) => m.available !== false);
    const temperature = history && history.temperatureC;
    const facts = h("dl", { class: "facts" },
      h("dt", {}, "Board"), h("dd", { "data-field": "board" }, board.model || board.cpu_model || "unknown board"),
      h("dt", {}, "SoC"), h("dd", { "data-field": "soc" }, board.soc || "not identified"),
      h("dt", {}, "CPU"), h("dd", {}, `${board.cpu_model || board.arch || "?"} · ${board.cores || "?"} cores`),
      h("dt", {}, "Temperature"),
      h("dd", { "data-field": "temperature" },
        temperature === null || temperature === undefined ? "not reported by this board" : `${temperature} °C`),
    );
    const rows = ((status.hardware && status.hardware.accelerators) || []).map((acc) => {
      const runs = models.filter((m) => m.accelerator === acc.kind).map((m) => m.id);
      return h("tr", { "data-accelerator": acc.kind },
        h("th", { scope: "row" }, acc.kind),
        h("td", { "data-name": "present" }, yesNo(acc.present)),
        h("td", { "data-name": "usable" }, yesNo(acc.usable)),
        h("td", { class: "reason", "data-name": "reason" }, acc.reason || ""),
        h("td", { "data-field": "runs", "data-name": "models" }, runs.length ? runs.join(", ") : "–"));
    });
    const table = h("table", { class: "accelerators cards" },
      h("thead", {}, h("tr", {}, h("th", {}, "Accelerator"), h("th", {}, "Present"), h("th", {}, "Usable"),
        h("th", {}, "Reason"), h("th", {}, "Models on it"))),
      h("tbody", {}, rows));
    this.panel.show(facts, h("div", { class: "scroll" }, table));
  }
}

export class ModelsPanel {
  constructor() {
    this.panel = new Panel("models");
    this.form = document.getElementById("model-settings");
    this.select = document.getElementById("model-select");
    this.confidence = document.getElementById("min-confidence");
    this.message = document.getElementById("settings-message");
    this.select.addEventListener("change", () => this.apply("model", this.select.value));
    this.confidence.addEventListener("change", () => this.apply("min_confidence", this.confidence.value));
    this.form.addEventListener("submit", (event) => event.preventDefault());
    this.busy = false;
  }

  render(status, history) {
    const latency = (history && history.models) || {};
    const memory = status.memory || {};
    // What each loaded model cost when it loaded (measured RSS growth), for a board whose RAM is the limit.
    const held = Object.fromEntries((memory.models || []).map((m) => [m.id, m.memoryMB]));
    const rows = (status.models || []).map((m) => {
      if (m.available === false) {
        return h("tr", { "data-model": m.id, class: "unavailable" },
          h("th", { scope: "row" }, m.id), h("td", { colspan: 6, class: "reason" }, `unavailable: ${m.reason}`));
      }
      const lat = latency[m.id] || {};
      const device = m.accelerator && m.inferenceDevice && m.accelerator.toUpperCase() !== m.inferenceDevice
        ? `${m.inferenceDevice} (${m.accelerator})` : m.inferenceDevice || m.accelerator;
      return h("tr", { "data-model": m.id },
        h("th", { scope: "row" }, m.id),
        h("td", { "data-field": "device", "data-name": "device" }, device || "?"),
        h("td", { "data-name": "p50" }, fmtMs(lat.p50Ms)),
        h("td", { "data-name": "p95" }, fmtMs(lat.p95Ms)),
        h("td", { "data-field": "served", "data-name": "served" }, String(m.processed ?? 0)),
        h("td", { "data-name": "queue" }, String(m.queueDepth ?? 0)),
        h("td", { "data-field": "memory", "data-name": "memory" }, fmtMiB(held[m.id])));
    });
    const table = h("table", { class: "models cards" },
      h("thead", {}, h("tr", {}, h("th", {}, "Model"), h("th", {}, "Device"), h("th", {}, "p50"), h("th", {}, "p95"),
        h("th", {}, "Served"), h("th", {}, "Queue"), h("th", {}, "Memory"))),
      h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 7 }, "No model loaded yet."))));
    const budget = memory.budgetMB === undefined ? [] : [h("p", { class: "muted small", "data-field": "memory-budget" },
      `Memory: ${fmtMiB(memory.rssMB)} of the ${fmtMiB(memory.budgetMB)} budget · models and tasks loaded: `
      + `${(memory.models || []).length} · unloaded to make room: ${memory.evictions ?? 0} · `
      + `refused for lack of room: ${memory.refusals ?? 0}`)];
    this.panel.show(h("div", { class: "scroll" }, table), ...budget);
  }

  // The selector's choices and current values, from the settings and custom-list routes.
  async loadSettings() {
    try {
      const [current, list] = await Promise.all([api(`/v1/settings/${MODULE}`), api("/v1/vision/custom/list")]);
      const models = ["auto", ...(list.models || [])];
      const chosen = current.settings.model;
      if (!models.includes(chosen)) models.push(chosen);
      this.select.replaceChildren(...models.map((id) =>
        h("option", { value: id, selected: id === chosen }, id === "auto" ? "auto (best for this hardware)" : id)));
      this.confidence.value = current.settings.min_confidence;
      this.form.hidden = false;
    } catch (err) {
      this.say(err.message, true);
      throw err;
    }
  }

  async apply(name, value) {
    if (this.busy) return;
    this.busy = true;
    this.select.disabled = this.confidence.disabled = true;
    this.say(name === "model" ? `loading ${value}…` : `setting ${name} to ${value}…`);
    try {
      const answer = await postForm(`/v1/settings/${MODULE}`, { name, value });
      this.say(answer.message || `${name} set to ${value}`);
    } catch (err) {
      this.say(err.message, true);
    } finally {
      this.busy = false;
      this.select.disabled = this.confidence.disabled = false;
      // Show what the daemon really uses now, whether the change worked or not.
      await this.loadSettings().catch(() => {});
    }
  }

  say(text, isError = false) {
    this.message.textContent = isError ? `⚠ ${text}` : text;
    this.message.className = isError ? "message bad" : "message";
  }
}
