// The page: scrub frames, draw strokes, segment, play the masks, correct, export. Plain JS, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const canvas = $("canvas");
const ctx = canvas.getContext("2d");

// The DAVIS palette (agent/data/synthetic.py davis_palette): object k is drawn in colour k.
function paletteColour(index) {
  const rgb = [0, 0, 0];
  let value = index;
  for (let bit = 0; bit < 8; bit++) {
    for (let channel = 0; channel < 3; channel++) rgb[channel] |= ((value >> channel) & 1) << (7 - bit);
    value >>= 3;
  }
  return `rgb(${rgb[0]}, ${rgb[1]}, ${rgb[2]})`;
}
const BACKGROUND = 0;

const app = {
  state: null,        // the server's /api/state
  frame: 0,
  label: 1,            // the id strokes are drawn with (0 background)
  objects: 2,          // object buttons shown
  pending: [],         // strokes not segmented yet: {frame, object_id, path: [[x, y] in 0..1]}
  segmented: [],       // strokes the agent has (from /api/strokes)
  drawing: null,
  inFlight: null,      // strokes of the round being segmented
  reported: null,      // the finished job last reported (its start time)
  playing: null,
  videoKey: "",
  images: new Map(),
  masks: new Map(),
  lastMessage: "",
};
window.app = app;  // for the browser test and the curious

// --- messages and progress ----------------------------------------------------------------------
function showMessage(text, kind = "info") {
  const box = $("message");
  box.textContent = text;
  box.className = "message " + (text ? kind : "");
  app.lastMessage = text;
  if (kind === "error") document.body.dataset.status = "error";
}

function showProgress(job) {
  const box = $("progress");
  if (!job || job.finished) { box.hidden = true; return; }
  box.hidden = false;
  const names = { probe: "Opening the video", read: "Reading frames", "load model": "Loading the model",
                  segment: "Segmenting", export: "Writing masks" };
  const seconds = Math.round(Date.now() / 1000 - job.started);
  const known = job.total > 0 && !(job.kind === "segment" && app.state && app.state.persistent);
  box.classList.toggle("indeterminate", !known);
  $("progress-bar").style.width = known ? `${(100 * job.done) / job.total}%` : "";
  const count = job.total > 0 ? ` ${job.done} / ${job.total} frames` : "";
  $("progress-text").textContent = `${names[job.stage] || job.kind}…${known ? count : ""} (${seconds} s)`;
}

async function api(method, path, body, raw) {
  let response;
  const options = { method };
  if (raw !== undefined) options.body = raw;
  else if (body !== undefined) {
    options.body = JSON.stringify(body);
    options.headers = { "Content-Type": "application/json" };
  }
  try {
    response = await fetch(path, options);
  } catch (error) {
    showMessage("The server does not answer: is `python -m agent.app` still running?", "error");
    throw error;
  }
  let data = null;
  try { data = await response.json(); } catch (error) { data = null; }
  if (!response.ok) {
    const text = (data && data.error) || `${response.status} ${response.statusText}`;
    showMessage(text, "error");
    throw new Error(text);
  }
  return data;
}
const quietly = (promise) => promise.catch(() => {});

// --- server state -------------------------------------------------------------------------------
async function refresh() {
  const state = await api("GET", "/api/state");
  const before = app.state;
  app.state = state;
  const job = state.job;
  if (job && !job.finished) {
    document.body.dataset.status = "busy";
    showProgress(job);
    setTimeout(() => quietly(refresh()), 250);
  } else {
    showProgress(null);
    if (job && app.reported !== job.started) jobFinished(job);
  }
  const key = state.video ? `${state.video.path}:${state.video.num_frames}` : "";
  if (key !== app.videoKey) videoChanged(state.video, key);
  if (!before || before.rounds !== state.rounds) await roundChanged();
  updateControls();
}

// A job ended: say how, and keep a failed round's strokes to correct and send again.
function jobFinished(job) {
  app.reported = job.started;
  if (job.kind === "segment" && app.inFlight) {
    if (!job.error) app.pending = app.pending.filter((s) => !app.inFlight.includes(s));
    app.inFlight = null;
  }
  if (job.error) showMessage(job.error, "error");
  else {
    if (job.warning) showMessage(`${job.message}; warning: ${job.warning}`, "warning");
    else if (job.message) showMessage(job.message, "info");
    document.body.dataset.status = "idle";
  }
  document.body.dataset.finished = Number(document.body.dataset.finished || 0) + 1;
}

function videoChanged(video, key) {
  app.videoKey = key;
  app.images.clear();
  app.masks.clear();
  app.pending = [];
  app.segmented = [];
  app.frame = 0;
  $("placeholder").hidden = !!video;
  if (video) {
    canvas.width = video.working[1];
    canvas.height = video.working[0];
    $("slider").max = video.num_frames - 1;
    if (!$("output").value) $("output").value = `${video.name}-masks`;
  }
  goTo(0);
}

async function roundChanged() {
  app.masks.clear();
  if (app.state.rounds > 0) app.segmented = (await api("GET", "/api/strokes")).strokes;
  else app.segmented = [];
  app.objects = Math.max(app.objects, app.state.num_objects);
  renderLabels();
  render();
}

function updateControls() {
  const video = app.state && app.state.video;
  const busy = !!(app.state && app.state.job && !app.state.job.finished);
  for (const id of ["segment", "export", "suggest", "reset", "open", "load-strokes"]) $(id).disabled = busy;
  const pending = app.pending.length;
  const rounds = app.state ? app.state.rounds : 0;
  $("status").textContent = video
    ? `${pending} new stroke${pending === 1 ? "" : "s"}; ${rounds} round${rounds === 1 ? "" : "s"} segmented`
    : "";
}

// --- frames, masks and drawing ------------------------------------------------------------------
function image(cache, url) {
  let img = cache.get(url);
  if (!img) {
    img = new Image();
    img.onload = () => render();
    img.onerror = () => { img.failed = true; };
    img.src = url;
    cache.set(url, img);
  }
  return img;
}

function frameImage(index) { return image(app.images, `/api/frame/${index}`); }
function maskImage(index) { return image(app.masks, `/api/mask/${index}?round=${app.state.rounds}`); }

function goTo(index) {
  const video = app.state && app.state.video;
  if (!video) { render(); return; }
  app.frame = Math.max(0, Math.min(video.num_frames - 1, index));
  $("slider").value = app.frame;
  $("frame-label").textContent = `frame ${app.frame} / ${video.num_frames - 1}`;
  for (let ahead = 1; ahead <= 3 && app.frame + ahead < video.num_frames; ahead++) frameImage(app.frame + ahead);
  render();
}

function strokeColour(id) { return id === BACKGROUND ? "rgb(255, 255, 255)" : paletteColour(id); }

function drawStroke(stroke, pending) {
  if (stroke.path.length === 0) return;
  ctx.save();
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  const width = Math.max(2, canvas.width / 200);
  ctx.beginPath();
  stroke.path.forEach(([x, y], i) => {
    const px = x * canvas.width, py = y * canvas.height;
    if (i === 0) ctx.moveTo(px, py); else ctx.lineTo(px, py);
  });
  if (stroke.path.length === 1) ctx.lineTo(stroke.path[0][0] * canvas.width + 0.1, stroke.path[0][1] * canvas.height);
  ctx.strokeStyle = "rgba(0, 0, 0, 0.7)";
  ctx.lineWidth = width + 2;
  if (!pending) ctx.setLineDash([6, 4]);
  ctx.stroke();
  ctx.strokeStyle = strokeColour(stroke.object_id);
  ctx.lineWidth = width;
  ctx.stroke();
  ctx.restore();
}

function render() {
  const video = app.state && app.state.video;
  ctx.fillStyle = "#111";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  if (!video) return;
  const img = frameImage(app.frame);
  if (img.complete && img.naturalWidth) ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
  app.maskShown = false;
  if (app.state.has_result && $("show-masks").checked) {
    const mask = maskImage(app.frame);
    if (mask.complete && mask.naturalWidth) {
      ctx.globalAlpha = 0.5;
      ctx.drawImage(mask, 0, 0, canvas.width, canvas.height);
      ctx.globalAlpha = 1;
      app.maskShown = true;
    }
  }
  app.segmented.filter((s) => s.frame === app.frame).forEach((s) => drawStroke(s, false));
  app.pending.filter((s) => s.frame === app.frame).forEach((s) => drawStroke(s, true));
  if (app.drawing) drawStroke(app.drawing, true);
  canvas.dataset.frame = app.frame;
  canvas.dataset.mask = app.maskShown ? "shown" : "none";
}

function renderLabels() {
  const box = $("labels");
  box.textContent = "";
  for (let id = 0; id <= app.objects; id++) {
    const button = document.createElement("button");
    button.dataset.label = id;
    button.id = `label-${id}`;
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = strokeColour(id);
    button.append(swatch, id === BACKGROUND ? "Background" : `Object ${id}`);
    button.className = id === app.label ? "active" : "";
    button.addEventListener("click", () => { app.label = id; renderLabels(); });
    box.append(button);
  }
}

function pointAt(event) {
  const rect = canvas.getBoundingClientRect();
  const clamp = (v) => Math.min(1, Math.max(0, v));
  return [clamp((event.clientX - rect.left) / rect.width), clamp((event.clientY - rect.top) / rect.height)];
}

canvas.addEventListener("pointerdown", (event) => {
  if (!app.state || !app.state.video) { showMessage("Open a video first.", "error"); return; }
  stopPlaying();
  try { canvas.setPointerCapture(event.pointerId); } catch (error) { /* synthetic pointers have no capture */ }
  app.drawing = { frame: app.frame, object_id: app.label, path: [pointAt(event)] };
  render();
});
canvas.addEventListener("pointermove", (event) => {
  if (!app.drawing) return;
  app.drawing.path.push(pointAt(event));
  render();
});
function endStroke() {
  if (!app.drawing) return;
  app.pending.push(app.drawing);
  app.drawing = null;
  render();
  updateControls();
}
canvas.addEventListener("pointerup", endStroke);
canvas.addEventListener("pointercancel", endStroke);

// --- playing ------------------------------------------------------------------------------------
function stopPlaying() {
  if (app.playing) clearInterval(app.playing);
  app.playing = null;
  $("play").textContent = "Play";
}
function togglePlay() {
  const video = app.state && app.state.video;
  if (!video) return;
  if (app.playing) { stopPlaying(); return; }
  $("play").textContent = "Pause";
  const fps = Math.min(25, video.fps || 24);
  app.playing = setInterval(() => goTo((app.frame + 1) % video.num_frames), 1000 / fps);
}

// --- buttons --------------------------------------------------------------------------------------
$("open-form").addEventListener("submit", (event) => {
  event.preventDefault();
  showMessage("");
  quietly(api("POST", "/api/open", { path: $("video-path").value }).then(refresh));
});
// An earlier result's strokes for the open video, played as its rounds were: the page continues from there.
$("strokes-form").addEventListener("submit", (event) => {
  event.preventDefault();
  if (!app.state || !app.state.video) { showMessage("Open a video first, then load its strokes.", "error"); return; }
  showMessage("");
  quietly(api("POST", "/api/load-strokes", { path: $("strokes-path").value }).then(refresh));
});
$("upload").addEventListener("change", () => {
  const file = $("upload").files[0];
  if (!file) return;
  showMessage(`Uploading ${file.name}…`);
  quietly(api("POST", `/api/upload?name=${encodeURIComponent(file.name)}`, undefined, file).then(refresh));
});
$("slider").addEventListener("input", () => { stopPlaying(); goTo(Number($("slider").value)); });
$("prev").addEventListener("click", () => { stopPlaying(); goTo(app.frame - 1); });
$("next").addEventListener("click", () => { stopPlaying(); goTo(app.frame + 1); });
$("play").addEventListener("click", togglePlay);
$("show-masks").addEventListener("change", render);
$("add-object").addEventListener("click", () => { app.objects += 1; app.label = app.objects; renderLabels(); });
$("undo").addEventListener("click", () => { app.pending.pop(); render(); updateControls(); });
$("clear").addEventListener("click", () => { app.pending = []; render(); updateControls(); });
$("segment").addEventListener("click", () => {
  if (!app.state || !app.state.video) { showMessage("Open a video first.", "error"); return; }
  if (!app.pending.length) {
    showMessage("No new stroke yet: choose an object and draw on it in the frame, then press Segment.", "error");
    return;
  }
  showMessage("");
  app.inFlight = app.pending.slice();
  quietly(api("POST", "/api/segment", { strokes: app.inFlight }).then(refresh, () => { app.inFlight = null; }));
});
$("suggest").addEventListener("click", () => {
  quietly(api("POST", "/api/suggest").then(({ frame }) => {
    stopPlaying();
    goTo(frame);
    showMessage(`Frame ${frame} is the one the agent is least sure of: correct it with a stroke and press Segment.`);
  }));
});
$("export").addEventListener("click", () => {
  showMessage("");
  quietly(api("POST", "/api/export", { output: $("output").value, overwrite: $("overwrite").checked }).then(refresh));
});
$("reset").addEventListener("click", () => {
  app.pending = [];
  quietly(api("POST", "/api/reset").then(() => { showMessage("Every stroke and mask forgotten."); return refresh(); }));
});
document.addEventListener("keydown", (event) => {
  if (event.target.tagName === "INPUT" && event.target.type === "text") return;
  if (event.key === "ArrowLeft") { stopPlaying(); goTo(app.frame - 1); event.preventDefault(); }
  else if (event.key === "ArrowRight") { stopPlaying(); goTo(app.frame + 1); event.preventDefault(); }
  else if (event.key === " ") { togglePlay(); event.preventDefault(); }
});
window.addEventListener("error", (event) => showMessage(`page error: ${event.message}`, "error"));

renderLabels();
quietly(refresh());
