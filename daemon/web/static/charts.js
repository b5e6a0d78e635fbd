// The two 10-minute charts, drawn in SVG from /v1/status/history (10-second buckets kept by the daemon).

import { Panel, h, svg } from "./dom.js";

const HEIGHT = 150;
const PAD = { left: 44, right: 10, top: 10, bottom: 22 };
const WINDOW_S = 600;

function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (value <= step * power) return step * power;
  }
  return 10 * power;
}

// One chart: series = [{name, cls, points: [[t, value|null], …]}], t in epoch seconds.
function chart(title, unit, series, now, width) {
  const root = h("figure", { class: "chart" });
  const plotW = width - PAD.left - PAD.right;
  const plotH = HEIGHT - PAD.top - PAD.bottom;
  const values = series.flatMap((s) => s.points.map((p) => p[1])).filter((v) => v !== null && v !== undefined);
  const top = niceMax(Math.max(0, ...values));
  const x = (t) => PAD.left + plotW * (1 - Math.min(WINDOW_S, Math.max(0, now - t)) / WINDOW_S);
  const y = (v) => PAD.top + plotH * (1 - v / top);
  const grid = [0, 0.5, 1].map((f) => [
    svg("line", { x1: PAD.left, x2: width - PAD.right, y1: y(top * f), y2: y(top * f), class: "grid" }),
    svg("text", { x: PAD.left - 6, y: y(top * f) + 4, class: "axis", "text-anchor": "end" }, formatTick(top * f)),
  ]);
  const ticks = [600, 300, 0].map((ago) =>
    svg("text", { x: x(now - ago), y: HEIGHT - 6, class: "axis", "text-anchor": ago === 600 ? "start" : ago ? "middle" : "end" },
      ago ? `−${ago / 60} min` : "now"));
  const lines = series.map((s) => {
    // A gap (no samples) breaks the line instead of drawing a slope through it.
    const runs = [];
    let run = [];
    for (const [t, v] of s.points) {
      if (v === null || v === undefined) {
        if (run.length) runs.push(run);
        run = [];
      } else run.push(`${x(t).toFixed(1)},${y(v).toFixed(1)}`);
    }
    if (run.length) runs.push(run);
    return runs.map((r) => r.length === 1
      ? svg("circle", { cx: r[0].split(",")[0], cy: r[0].split(",")[1], r: 3.5, class: `dot ${s.cls}` })
      : svg("polyline", { points: r.join(" "), class: `line ${s.cls}` }));
  });
  const latest = series.map((s) => {
    const last = [...s.points].reverse().find((p) => p[1] !== null && p[1] !== undefined);
    return h("span", { class: `legend ${s.cls}` }, `${s.name}: ${last ? formatTick(last[1]) : "–"}${unit}`);
  });
  root.append(
    h("figcaption", {}, h("strong", {}, title), " ", ...latest),
    svg("svg", { viewBox: `0 0 ${width} ${HEIGHT}`, role: "img", "aria-label": title },
      grid, ticks, lines));
  return root;
}

function formatTick(value) {
  if (value === 0) return "0";
  if (value < 1) return value.toFixed(2);
  if (value < 10) return value.toFixed(1);
  return Math.round(value).toString();
}

export class ChartsPanel {
  constructor() {
    this.panel = new Panel("charts");
    this.last = null;
    // Redrawn at the new size when the window changes (a phone turned sideways), not at the next poll.
    window.addEventListener("resize", () => { if (this.last) this.render(this.last); });
  }

  render(history) {
    this.last = history;
    const buckets = [...(history.buckets || [])];
    if (history.current && history.current.seconds >= 1) buckets.push(history.current);
    const now = Date.now() / 1000;
    const mid = (b) => b.t + b.seconds / 2;
    // Drawn at the size it is shown (side by side on a laptop, stacked on a phone), so text is never stretched.
    const full = this.panel.body.clientWidth || 600;
    const width = Math.max(260, Math.round(window.innerWidth >= 900 ? (full - 16) / 2 : full));
    const requests = chart("Requests per second", "/s", [
      { name: "HTTP", cls: "s1", points: buckets.map((b) => [mid(b), b.rps]) },
      { name: "inferences", cls: "s2", points: buckets.map((b) => [mid(b), b.inferencePerSecond]) },
    ], now, width);
    const latency = chart("Inference time", " ms", [
      { name: "p50", cls: "s1", points: buckets.map((b) => [mid(b), b.p50Ms]) },
      { name: "p95", cls: "s3", points: buckets.map((b) => [mid(b), b.p95Ms]) },
    ], now, width);
    const note = buckets.length
      ? h("p", { class: "muted small" }, `${history.bucketSeconds}-second buckets; the dashboard's own polling is not counted.`)
      : h("p", { class: "muted" }, "No samples yet: the first 10-second bucket closes shortly after start.");
    this.panel.show(h("div", { class: "charts" }, requests, latency), note);
  }
}
