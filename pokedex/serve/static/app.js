// Pokédex web page: pick or drop an image, POST it to /predict, show the top-5 with probability bars.
// No framework, no CDN: everything this page needs is served by the app itself.
"use strict";

const $ = (id) => document.getElementById(id);
const input = $("file");
const drop = $("drop");
const preview = $("preview");
const list = $("predictions");
const statusLine = $("status");
const errorLine = $("error");
let limits = null;
let previewUrl = null;

function showError(message) {
  errorLine.textContent = message;
  errorLine.hidden = false;
  statusLine.textContent = "";
}

function clearError() {
  errorLine.textContent = "";
  errorLine.hidden = true;
}

// FastAPI errors: {"detail": "text"} or, for validation errors, {"detail": [{"msg": ...}, ...]}.
function errorText(body, response) {
  const detail = body && body.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) return detail.map((d) => d.msg || JSON.stringify(d)).join("; ");
  return `The server answered ${response.status} ${response.statusText}.`;
}

function render(predictions) {
  list.replaceChildren();
  for (const p of predictions) {
    const item = document.createElement("li");
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = p.label;  // textContent: class names are never parsed as HTML
    const track = document.createElement("span");
    track.className = "track";
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.display = "block";
    fill.style.width = `${(p.probability * 100).toFixed(1)}%`;
    track.append(fill);
    const pct = document.createElement("span");
    pct.className = "pct";
    pct.textContent = `${(p.probability * 100).toFixed(1)}%`;
    item.append(label, track, pct);
    list.append(item);
  }
}

async function classify(file) {
  clearError();
  list.replaceChildren();
  if (!file) return;
  if (limits && file.size > limits.max_upload_mb * 1024 * 1024) {
    showError(`That file is ${(file.size / 1048576).toFixed(1)} MB; the limit is ${limits.max_upload_mb} MB.`);
    return;
  }
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  previewUrl = URL.createObjectURL(file);
  preview.src = previewUrl;
  preview.hidden = false;
  $("drop-text").hidden = true;

  statusLine.textContent = "Thinking…";
  const form = new FormData();
  form.append("file", file);
  let response;
  try {
    response = await fetch("/predict?top_k=5", { method: "POST", body: form });
  } catch (err) {
    showError("Could not reach the server. Is it still running?");
    return;
  }
  let body = null;
  try {
    body = await response.json();
  } catch (err) {
    body = null;
  }
  if (!response.ok) {
    showError(`Sorry, that didn't work: ${errorText(body, response)}`);
    return;
  }
  render(body.predictions);
  statusLine.textContent = `Answered in ${body.elapsed_ms.toFixed(0)} ms.`;
}

async function loadModel() {
  try {
    const response = await fetch("/model");
    if (!response.ok) {
      $("model").textContent = "model: not ready yet (reload in a moment)";
      return;
    }
    const info = await response.json();
    limits = info.limits;
    $("model").textContent =
      `model: ${info.name} (${info.backend}, ${info.num_classes} classes, ${info.sha256.slice(0, 12)})`;
  } catch (err) {
    $("model").textContent = "model: server unreachable";
  }
}

input.addEventListener("change", () => classify(input.files[0]));
for (const name of ["dragenter", "dragover"]) {
  drop.addEventListener(name, (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
}
for (const name of ["dragleave", "drop"]) {
  drop.addEventListener(name, () => drop.classList.remove("over"));
}
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  const file = event.dataTransfer.files[0];
  if (file) classify(file);
});

loadModel();
