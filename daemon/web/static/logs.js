// Recent log lines from the daemon's log ring (/v1/log/list), newest at the bottom, polled with last_id.

import { api } from "./api.js";
import { Panel, h } from "./dom.js";

const KEEP = 200;

export class LogsPanel {
  constructor() {
    this.panel = new Panel("logs");
    this.list = h("ol", { class: "log" });
    this.lastId = 0;
  }

  async refresh() {
    const query = this.lastId ? `last_id=${this.lastId}&count=200` : "count=100";
    const { entries } = await api(`/v1/log/list?${query}`);
    if (!this.panel.filled) this.panel.show(this.list);
    else this.panel.clearError();
    const stick = this.list.scrollTop + this.list.clientHeight >= this.list.scrollHeight - 8;
    if (entries.length) this.list.querySelector(".muted")?.remove();
    for (const entry of entries) {
      this.lastId = Math.max(this.lastId, entry.id);
      const time = new Date(entry.timestamp).toLocaleTimeString();
      this.list.append(h("li", { class: `level-${entry.level || "info"}` },
        h("time", {}, time), " ", h("span", { class: "level" }, entry.level || ""), " ", entry.entry));
    }
    while (this.list.children.length > KEEP) this.list.firstChild.remove();
    if (!this.list.children.length) this.list.append(h("li", { class: "muted" }, "No log lines yet."));
    if (stick || entries.length === this.list.children.length) this.list.scrollTop = this.list.scrollHeight;
  }
}
