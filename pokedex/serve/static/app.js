// Pokédex web page: pick or drop an image, POST it to /predict, show the top-5 with a reference sprite each.
// Confident answers get probability bars; when the server flags low confidence, a notice says the picture doesn't
// look like the training sprites and the candidates are shown as guesses, without bars.
// No framework, no CDN: everything this page needs is served by the app itself.
"use strict";

const $ = (id) => document.getElementById(id);
const input = $("file");
const drop = $("drop");
const preview = $("preview");
const list = $("predictions");
const statusLine = $("status");
const errorLine = $("error");
const noticeLine = $("notice");
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
  noticeLine.textContent = "";
  noticeLine.hidden = true;
  list.classList.remove("unsure");
}

// FastAPI errors: {"detail": "text"} or, for validation errors, {"detail": [{"msg": ...}, ...]}.
function errorText(body, response) {
  const detail = body && body.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) return detail.map((d) => d.msg || JSON.stringify(d)).join("; ");
  return `The server answered ${response.status} ${response.statusText}.`;
}

function thumbnail(p) {
  const img = document.createElement("img");
  img.className = "thumb";
  img.src = `/classes/${p.index}/thumbnail`;
  img.alt = `a training sprite of ${p.label}`;
  img.width = 48;
  img.height = 48;
  img.addEventListener("error", () => { img.style.visibility = "hidden"; });  // model exported without them
  return img;
}

function render(body) {
  const predictions = body.predictions;
  list.replaceChildren();
  list.classList.toggle("unsure", body.low_confidence);
  if (body.low_confidence) {
    noticeLine.textContent = body.notice;
    noticeLine.hidden = false;
  }
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
    item.append(thumbnail(p), label, track, pct);
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
  render(body);
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
