// The dashboard: polls the daemon's own routes and fills the panels. No framework, no build step, no other host.

import { AuthError, api, getKey, setKey } from "./api.js";
import { CamerasPanel } from "./cameras.js";
import { ChartsPanel } from "./charts.js";
import { fmtDuration } from "./dom.js";
import { LogsPanel } from "./logs.js";
import { HardwarePanel, ModelsPanel } from "./panels.js";
import { TryItPanel } from "./tryit.js";

const STATUS_MS = 3000;
const LOG_MS = 5000;

const hardware = new HardwarePanel();
const models = new ModelsPanel();
const charts = new ChartsPanel();
const cameras = new CamerasPanel();
const logs = new LogsPanel();
new TryItPanel();

const keyDialog = document.getElementById("key-dialog");
const keyForm = document.getElementById("key-form");
const keyInput = document.getElementById("key-input");
const keyMessage = document.getElementById("key-message");
const banner = document.getElementById("banner");
let locked = false;
let settingsLoaded = false;

function askForKey(message) {
  if (!locked) {
    locked = true;
    cameras.stopAll();
  }
  keyMessage.textContent = message;
  if (!keyDialog.open) keyDialog.showModal();
  keyInput.focus();
}

keyForm.addEventListener("submit", (event) => {
  event.preventDefault();
  setKey(keyInput.value.trim());
  keyInput.value = "";
  keyDialog.close();
  locked = false;
  keyMessage.textContent = "checking the key…";
  tick();
  refreshLogs();
});

document.getElementById("key-button").addEventListener("click", () => {
  keyInput.value = getKey();
  askForKey("Enter the API key or account token to use (leave empty when keys are off).");
});

function showBanner(err) {
  banner.textContent = err ? `⚠ ${err.message}` : "";
  banner.hidden = !err;
}

// A refusal for want of a key locks the page behind the key dialog; other errors go to the panel that asked.
function handle(panel, err) {
  if (err instanceof AuthError) {
    askForKey(getKey() ? `That key was refused: ${err.message}` : `This Perch box has API keys switched on: ${err.message}`);
    return;
  }
  panel.fail(err);
}

async function tick() {
  if (locked) return;
  let status;
  try {
    status = await api("/v1/status/system-status");
    showBanner(null);
  } catch (err) {
    if (err instanceof AuthError) return handle(hardware.panel, err);
    showBanner(err);
    for (const p of [hardware.panel, models.panel, cameras.panel]) p.fail(err);
    return;
  }
  document.getElementById("host").textContent = status.hostname || "";
  document.getElementById("uptime").textContent = `up ${fmtDuration(status.uptimeSeconds)}`;
  const version = document.getElementById("version");
  if (!version.textContent) {
    api("/v1/status/version").then((v) => { version.textContent = `perchd ${v.message}`; }).catch(() => {});
  }
  let history = null;
  try {
    history = await api("/v1/status/history");
    charts.render(history);
  } catch (err) {
    handle(charts.panel, err);
  }
  for (const [panel, draw] of [[hardware, () => hardware.render(status, history)],
    [models, () => models.render(status, history)], [cameras, () => cameras.render(status)]]) {
    try {
      draw();
    } catch (err) {
      panel.panel.fail(new Error(`could not show this: ${err.message}`));
    }
  }
  try {
    await cameras.renderEvents();
  } catch (err) {
    handle(cameras.panel, err);
  }
  if (!settingsLoaded) {
    try {
      await models.loadSettings();
      settingsLoaded = true;
    } catch (err) {
      handle(models.panel, err);
    }
  }
}

async function refreshLogs() {
  if (locked) return;
  try {
    await logs.refresh();
  } catch (err) {
    handle(logs.panel, err);
  }
}

async function loop(fn, ms) {
  for (;;) {
    await fn();
    await new Promise((resolve) => setTimeout(resolve, ms));
  }
}

loop(tick, STATUS_MS);
loop(refreshLogs, LOG_MS);
