// The correction page: read a radiograph through /v1/predict, draw each vertebra's outline
// over it (SVG), let the reader move any corner, and recompute the Cobb angles through
// /v1/angles. Plain JS, no build step, nothing fetched but this service's own endpoints.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const LEVELS = ["T1", "T2", "T3", "T4", "T5", "T6", "T7", "T8", "T9", "T10", "T11", "T12",
  "L1", "L2", "L3", "L4", "L5"];
const CORNERS = ["top-left", "top-right", "bottom-left", "bottom-right"]; // TL, TR, BL, BR
const OUTLINE = [0, 1, 3, 2]; // TL -> TR -> BR -> BL draws the quadrilateral
const REGIONS = ["proximal thoracic", "main thoracic", "thoracolumbar/lumbar"];
const CHALLENGE_KEYS = ["angle_1", "angle_2", "angle_3"];
const EDIT_NOTE = "corners corrected by hand: ";
const HANDLE_PX = 6; // handle radius on screen, whatever the zoom
const ZOOM_STEP = 1.25;

const state = {
  result: null, // the result JSON as /v1/predict returned it
  corners: null, // (17, 4, 2) as edited
  derived: null, // {curves, challenge} of the current corners
  edited: new Set(), // indices of vertebrae moved by hand
  undo: [],
  redo: [],
  view: { x: 0, y: 0, w: 100, h: 100 },
  width: 100,
  height: 100,
  imageUrl: null,
  file: null, // the radiograph as opened
  inFlight: null, // the /v1/angles request under way (a Promise)
  again: false, // corners changed while a request was under way
  seq: 0,
};

const $ = (id) => document.getElementById(id);
const el = (tag, attrs = {}, parent = null, ns = null) => {
  const node = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
};
const round1 = (v) => Math.round(v * 10) / 10;
const slug = (region) => region.replace(/[^a-z]+/g, "-");
const copyCorners = (c) => c.map((quad) => quad.map((p) => [p[0], p[1]]));

// ---- messages ----

function say(text) {
  $("status").textContent = text;
}

function alarm(text) {
  const node = $("alert");
  node.hidden = !text;
  node.textContent = text || "";
}

async function errorText(response) {
  try {
    const body = await response.json();
    return body.detail || body.error || `${response.status} ${response.statusText}`;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

// ---- reading a radiograph ----

async function openFile(file) {
  if (!file) return;
  alarm("");
  say(`Reading ${file.name}…`);
  document.body.dataset.pending = "1";
  const form = new FormData();
  form.append("file", file, file.name);
  try {
    const response = await fetch("/v1/predict", { method: "POST", body: form });
    if (!response.ok) {
      alarm(await errorText(response));
      say(`Could not read ${file.name}.`);
      return;
    }
    const result = await response.json();
    await showImage(file, result.input.width, result.input.height);
    state.file = file; // sent again with the PDF request, so the report shows the radiograph
    load(result);
  } catch (err) {
    alarm(`${file.name}: the service could not be reached (${err.message})`);
    say("");
  } finally {
    document.body.dataset.pending = "0";
  }
}

function loadsInBrowser(url) {
  return new Promise((resolve) => {
    const probe = new Image();
    probe.onload = () => resolve(true);
    probe.onerror = () => resolve(false);
    probe.src = url;
  });
}

async function showImage(file, width, height) {
  // JPEG and PNG show as they are; TIFF and DICOM come back from the service as a PNG
  if (state.imageUrl) URL.revokeObjectURL(state.imageUrl);
  let url = URL.createObjectURL(file);
  if (!(await loadsInBrowser(url))) {
    URL.revokeObjectURL(url);
    const form = new FormData();
    form.append("file", file, file.name);
    const response = await fetch("/v1/preview", { method: "POST", body: form });
    url = response.ok ? URL.createObjectURL(await response.blob()) : "";
  }
  state.imageUrl = url;
  state.width = width;
  state.height = height;
  const image = $("radiograph");
  image.setAttribute("href", url);
  image.setAttribute("width", width);
  image.setAttribute("height", height);
}

function load(result) {
  state.seq += 1; // an answer still on its way belongs to the previous radiograph
  state.result = result;
  state.corners = result.vertebrae.map((v) => v.corners.map((p) => [p[0], p[1]]));
  state.derived = { curves: result.curves, challenge: result.challenge };
  state.edited = new Set();
  state.undo = [];
  state.redo = [];
  $("empty").hidden = true;
  for (const id of ["zoom-in", "zoom-out", "zoom-fit", "download-json", "download-csv", "download-pdf"]) {
    $(id).disabled = false;
  }
  buildOverlay();
  fit();
  renderTables();
  updateButtons();
  const name = result.input.path || "radiograph";
  if (result.status === "rejected") {
    say(`${name}: rejected, nothing measured.`);
    alarm(result.reason || "rejected");
  } else {
    say(`${name}: ${result.vertebrae.length} vertebrae, ${result.curves.length} curve(s), status ${result.status}.`);
  }
}

// ---- the overlay ----

function flagsOf(i) {
  const v = state.result.vertebrae[i];
  return v ? v.flags : [];
}

function buildOverlay() {
  for (const id of ["outlines", "labels", "handles", "endlines"]) $(id).replaceChildren();
  state.corners.forEach((quad, i) => {
    const flagged = flagsOf(i).length > 0;
    el("polygon", { class: `vertebra${flagged ? " flagged" : ""}`, "data-level": LEVELS[i] }, $("outlines"), SVG);
    const label = el("text", { class: `level${flagged ? " flagged" : ""}`, "text-anchor": "end",
      "dominant-baseline": "middle" }, $("labels"), SVG);
    label.textContent = LEVELS[i] + (flagged ? "?" : "");
    quad.forEach((_, c) => {
      const handle = el("circle", { class: "handle", tabindex: "0", role: "button", "data-v": i, "data-c": c },
        $("handles"), SVG);
      handle.addEventListener("pointerdown", startDrag);
      handle.addEventListener("keydown", nudge);
      handle.addEventListener("focus", () => reveal(i, c));
    });
  });
  drawAll();
}

function drawVertebra(i) {
  const quad = state.corners[i];
  $("outlines").children[i].setAttribute("points", OUTLINE.map((c) => quad[c].join(",")).join(" "));
  const label = $("labels").children[i];
  const left = Math.min(quad[0][0], quad[2][0]);
  label.setAttribute("x", left - 0.15 * Math.abs(quad[1][0] - quad[0][0]) - 4);
  label.setAttribute("y", (quad[0][1] + quad[2][1]) / 2);
  quad.forEach((p, c) => {
    const handle = $("handles").children[4 * i + c];
    handle.setAttribute("cx", p[0]);
    handle.setAttribute("cy", p[1]);
    handle.setAttribute("aria-label",
      `${LEVELS[i]} ${CORNERS[c]} corner at x ${round1(p[0])}, y ${round1(p[1])}; arrow keys move it`);
  });
}

function drawAll() {
  state.corners.forEach((_, i) => drawVertebra(i));
  drawEndLines();
}

function drawEndLines() {
  // each curve: the upper endplate of its upper end vertebra and the lower endplate of its
  // lower end vertebra, drawn long enough to read the angle between them
  const group = $("endlines");
  group.replaceChildren();
  if (!state.derived) return;
  state.derived.curves.forEach((curve) => {
    const up = LEVELS.indexOf(curve.upper_end_vertebra);
    const lo = LEVELS.indexOf(curve.lower_end_vertebra);
    const cls = `endline region-${slug(curve.region)}`;
    const lines = [[state.corners[up][0], state.corners[up][1]], [state.corners[lo][2], state.corners[lo][3]]];
    for (const [a, b] of lines) {
      const [x1, y1, x2, y2] = extend(a, b, 0.8);
      el("line", { class: cls, x1, y1, x2, y2 }, group, SVG);
    }
    const [, , x2, y2] = extend(lines[0][0], lines[0][1], 0.8);
    const tag = el("text", { class: `curve-tag region-${slug(curve.region)}`, x: x2 + 6, y: y2 }, group, SVG);
    tag.textContent = `${curve.cobb_angle.toFixed(1)}°`;
  });
  scaleMarks();
}

function extend(a, b, by) {
  const dx = b[0] - a[0];
  const dy = b[1] - a[1];
  return [a[0] - by * dx, a[1] - by * dy, b[0] + by * dx, b[1] + by * dy];
}

// ---- zoom and pan (the SVG viewBox is the view, in image pixels) ----

function setView(v) {
  state.view = v;
  $("view").setAttribute("viewBox", `${v.x} ${v.y} ${v.w} ${v.h}`);
  scaleMarks();
}

function pixelsPerUnit() {
  const ctm = $("view").getScreenCTM();
  return ctm && ctm.a > 0 ? ctm.a : 1;
}

function scaleMarks() {
  // handles and labels keep their size on screen at every zoom
  const unit = 1 / pixelsPerUnit();
  for (const h of $("handles").children) h.setAttribute("r", HANDLE_PX * unit);
  for (const t of document.querySelectorAll("#labels text, #endlines text")) {
    t.setAttribute("font-size", 13 * unit);
  }
}

function fit() {
  const margin = 0.03 * Math.max(state.width, state.height);
  setView({ x: -margin, y: -margin, w: state.width + 2 * margin, h: state.height + 2 * margin });
}

function focusedCorner() {
  const h = document.activeElement;
  if (!h || !h.classList || !h.classList.contains("handle")) return null;
  const [x, y] = state.corners[+h.dataset.v][+h.dataset.c];
  return { x, y };
}

function zoom(factor, at = null) {
  // around the pointer, else the focused corner, else the middle of the view
  const v = state.view;
  const p = at || focusedCorner() || { x: v.x + v.w / 2, y: v.y + v.h / 2 };
  setView({ x: p.x - (p.x - v.x) / factor, y: p.y - (p.y - v.y) / factor, w: v.w / factor, h: v.h / factor });
}

function toImage(event) {
  const pt = $("view").createSVGPoint();
  pt.x = event.clientX;
  pt.y = event.clientY;
  const p = pt.matrixTransform($("view").getScreenCTM().inverse());
  return { x: p.x, y: p.y };
}

function reveal(i, c) {
  // keep the focused corner on screen when the keyboard reaches it
  const [x, y] = state.corners[i][c];
  const v = state.view;
  if (x < v.x || x > v.x + v.w || y < v.y || y > v.y + v.h) {
    setView({ ...v, x: x - v.w / 2, y: y - v.h / 2 });
  }
}

function wheel(event) {
  if (!state.result) return;
  event.preventDefault();
  zoom(Math.pow(1.0015, -event.deltaY), toImage(event));
}

let pan = null;

function startPan(event) {
  if (!state.result || event.target.classList.contains("handle") || event.button !== 0) return;
  pan = { x: event.clientX, y: event.clientY, view: { ...state.view }, unit: 1 / pixelsPerUnit() };
  $("view").setPointerCapture(event.pointerId);
  $("viewer").classList.add("panning");
}

function movePan(event) {
  if (!pan) return;
  const v = pan.view;
  setView({ ...v, x: v.x - (event.clientX - pan.x) * pan.unit, y: v.y - (event.clientY - pan.y) * pan.unit });
}

function endPan() {
  pan = null;
  $("viewer").classList.remove("panning");
}

// ---- editing corners ----

function snapshot() {
  return { corners: copyCorners(state.corners), edited: [...state.edited] };
}

function remember(before) {
  state.undo.push(before);
  state.redo = [];
  updateButtons();
}

function restore(snap) {
  state.corners = copyCorners(snap.corners);
  state.edited = new Set(snap.edited);
  drawAll();
  renderVertebrae();
  recompute();
}

function undo() {
  if (!state.undo.length) return;
  state.redo.push(snapshot());
  restore(state.undo.pop());
  updateButtons();
  say("Undone.");
}

function redo() {
  if (!state.redo.length) return;
  state.undo.push(snapshot());
  restore(state.redo.pop());
  updateButtons();
  say("Redone.");
}

function updateButtons() {
  $("undo").disabled = !state.undo.length;
  $("redo").disabled = !state.redo.length;
}

function clampPoint(x, y) {
  // corners may leave the image a little, never without bound
  const w = state.width;
  const h = state.height;
  return [Math.min(Math.max(x, -w), 2 * w), Math.min(Math.max(y, -h), 2 * h)];
}

function moveCorner(i, c, x, y) {
  state.corners[i][c] = clampPoint(x, y);
  state.edited.add(i);
  drawVertebra(i);
  drawEndLines();
  recompute();
}

let drag = null;

function startDrag(event) {
  if (event.button !== 0) return;
  event.preventDefault();
  event.stopPropagation();
  const handle = event.currentTarget;
  handle.focus({ preventScroll: true });
  handle.setPointerCapture(event.pointerId);
  drag = { i: +handle.dataset.v, c: +handle.dataset.c, before: snapshot(), moved: false, handle };
  handle.addEventListener("pointermove", moveDrag);
  handle.addEventListener("pointerup", endDrag);
  handle.addEventListener("pointercancel", endDrag);
}

function moveDrag(event) {
  if (!drag) return;
  const p = toImage(event);
  if (!drag.moved) {
    remember(drag.before);
    drag.moved = true;
  }
  moveCorner(drag.i, drag.c, p.x, p.y);
}

function endDrag() {
  if (!drag) return;
  const { handle, moved, i } = drag;
  handle.removeEventListener("pointermove", moveDrag);
  handle.removeEventListener("pointerup", endDrag);
  handle.removeEventListener("pointercancel", endDrag);
  drag = null;
  if (moved) {
    renderVertebrae();
    say(`${LEVELS[i]} moved.`);
  }
}

const ARROWS = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
let lastNudge = { handle: null, time: 0 };

function nudge(event) {
  const step = ARROWS[event.key];
  if (!step) return;
  event.preventDefault();
  event.stopPropagation();
  const handle = event.currentTarget;
  const i = +handle.dataset.v;
  const c = +handle.dataset.c;
  const now = performance.now();
  // a run of key presses on one corner is one step to undo
  if (lastNudge.handle !== handle || now - lastNudge.time > 1000) remember(snapshot());
  lastNudge = { handle, time: now };
  const by = event.shiftKey ? 10 : 1;
  const [x, y] = state.corners[i][c];
  moveCorner(i, c, x + step[0] * by, y + step[1] * by);
  renderVertebrae();
}

// ---- angles through the service ----

function recompute() {
  // one request at a time; changes made meanwhile are sent as soon as it returns
  if (state.inFlight) {
    state.again = true;
    return state.inFlight;
  }
  document.body.dataset.pending = "1";
  state.inFlight = (async () => {
    try {
      do {
        state.again = false;
        const seq = ++state.seq;
        const response = await fetch("/v1/angles", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ landmarks: state.corners, height: state.height }),
        });
        if (!response.ok) {
          alarm(await errorText(response));
        } else if (seq === state.seq) {
          alarm("");
          state.derived = await response.json();
          drawEndLines();
          renderCurves();
        }
      } while (state.again);
    } catch (err) {
      alarm(`angles: the service could not be reached (${err.message})`);
    } finally {
      state.inFlight = null;
      document.body.dataset.pending = "0";
    }
  })();
  return state.inFlight;
}

async function settled() {
  while (state.inFlight) await state.inFlight;
}

// ---- tables ----

function cell(row, text, attrs = {}) {
  const td = el("td", attrs, row);
  td.textContent = text;
  return td;
}

function renderCurves() {
  const body = $("curves").tBodies[0];
  body.replaceChildren();
  const curves = state.derived ? state.derived.curves : [];
  if (!curves.length) {
    cell(el("tr", {}, body), "no curve measured", { colspan: 5 });
  }
  for (const c of curves) {
    const row = el("tr", { class: `region-${slug(c.region)}${c.major ? " major" : ""}`, "data-region": c.region }, body);
    const th = el("th", { scope: "row" }, row);
    th.textContent = c.region + (c.major ? " (major)" : "");
    cell(row, `${c.cobb_angle.toFixed(1)}°`, { "data-key": "cobb_angle" });
    cell(row, `${c.upper_end_vertebra}–${c.lower_end_vertebra}`, { "data-key": "ends" });
    cell(row, c.apex, { "data-key": "apex" });
    cell(row, c.convexity.patient, { "data-key": "convexity" });
  }
  const chBody = $("challenge").tBodies[0];
  chBody.replaceChildren();
  const ch = state.derived ? state.derived.challenge : null;
  if (!ch) return;
  CHALLENGE_KEYS.forEach((key, k) => {
    const a = ch[key];
    const row = el("tr", { "data-angle": key }, chBody);
    el("th", { scope: "row" }, row).textContent = `angle ${k + 1}`;
    cell(row, a.degrees === null ? "undefined" : `${a.degrees.toFixed(1)}°`, { "data-key": "degrees" });
    cell(row, `${a.upper_end_vertebra}–${a.lower_end_vertebra}`, { "data-key": "ends" });
  });
}

function renderVertebrae() {
  const body = $("vertebrae").tBodies[0];
  body.replaceChildren();
  state.result.vertebrae.forEach((v, i) => {
    const notes = v.flags.map((f) => f.replace("_", " "));
    if (state.edited.has(i)) notes.push("corrected");
    const row = el("tr", { class: v.flags.length ? "flagged" : "", "data-level": v.level }, body);
    const th = el("th", { scope: "row" }, row);
    const go = el("button", { type: "button", class: "link", title: `Go to ${v.level}'s first corner` }, th);
    go.textContent = v.level;
    go.addEventListener("click", () => $("handles").children[4 * i].focus());
    cell(row, v.score === null ? "–" : v.score.toFixed(3));
    cell(row, (v.flags.length ? "⚠ " : "") + notes.join(", "));
  });
}

function renderTables() {
  renderCurves();
  renderVertebrae();
  const warnings = state.result.warnings;
  $("warnings-section").hidden = !warnings.length;
  $("warnings").replaceChildren(...warnings.map((w) => {
    const li = document.createElement("li");
    li.textContent = w;
    return li;
  }));
}

// ---- the corrected result and its downloads ----

function correctedResult() {
  const r = structuredClone(state.result);
  if (!state.edited.size) return r;
  r.vertebrae.forEach((v, i) => {
    v.corners = state.corners[i].map((p) => [round1(p[0]), round1(p[1])]);
  });
  r.curves = state.derived.curves;
  r.challenge = state.derived.challenge;
  const levels = [...state.edited].sort((a, b) => a - b).map((i) => LEVELS[i]).join(", ");
  r.warnings = r.warnings.filter((w) => !w.startsWith(EDIT_NOTE));
  r.warnings.push(`${EDIT_NOTE}${levels}; angles recomputed from the corrected corners`);
  return r;
}

function csvField(value) {
  const text = String(value);
  return /[",\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

// the batch CSV (results.csv) of `cobbnet predict`, one row: the same columns and cells
function csvText(r) {
  const keys = REGIONS.map((region) => region.replace(/[/ ]/g, "_"));
  const header = ["input", "status", ...keys.flatMap((k) => [`${k}_deg`, `${k}_levels`]), "major_region",
    ...CHALLENGE_KEYS.map((_, k) => `challenge_angle_${k + 1}_deg`), "warnings"];
  const degrees = Object.fromEntries(REGIONS.map((region) => [region, []]));
  const levels = Object.fromEntries(REGIONS.map((region) => [region, []]));
  let major = "";
  for (const c of r.curves) {
    degrees[c.region].push(c.cobb_angle.toFixed(1));
    levels[c.region].push(`${c.upper_end_vertebra}-${c.lower_end_vertebra}`);
    if (c.major) major = c.region;
  }
  const challenge = r.challenge || {};
  const row = [r.input.path || "", r.status,
    ...REGIONS.flatMap((region) => [degrees[region].join(";"), levels[region].join(";")]), major,
    ...CHALLENGE_KEYS.map((k) => {
      const d = challenge[k] ? challenge[k].degrees : null;
      return d === null || d === undefined ? "" : d.toFixed(1);
    }),
    r.warnings.join("; ")];
  return [header, row].map((line) => line.map(csvField).join(",")).join("\n") + "\n";
}

function stem() {
  const name = (state.result && state.result.input.path) || "cobbnet";
  return name.replace(/\.[^.]*$/, "") || "cobbnet";
}

function save(blob, name) {
  const a = el("a", { href: URL.createObjectURL(blob), download: name });
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

async function download(kind) {
  await settled();
  const r = correctedResult();
  if (kind === "json") {
    save(new Blob([JSON.stringify(r, null, 2) + "\n"], { type: "application/json" }), `${stem()}-corrected.json`);
  } else if (kind === "csv") {
    save(new Blob([csvText(r)], { type: "text/csv" }), `${stem()}-corrected.csv`);
  } else {
    say("Making the PDF report…");
    const form = new FormData();
    form.append("result", JSON.stringify(r));
    if (state.file) form.append("file", state.file, state.file.name);
    const response = await fetch("/v1/report", { method: "POST", body: form });
    if (!response.ok) {
      alarm(await errorText(response));
      return;
    }
    save(await response.blob(), `${stem()}-report.pdf`);
    say("PDF report saved.");
  }
}

// ---- wiring ----

function globalKeys(event) {
  const inField = event.target instanceof HTMLInputElement;
  const mod = event.ctrlKey || event.metaKey;
  if (mod && event.key.toLowerCase() === "z") {
    event.preventDefault();
    if (event.shiftKey) redo(); else undo();
  } else if (mod && event.key.toLowerCase() === "y") {
    event.preventDefault();
    redo();
  } else if (mod || event.altKey || inField) {
    return;
  } else if (event.key === "o" || event.key === "O") {
    $("file").click();
  } else if (!state.result) {
    return;
  } else if (event.key === "+" || event.key === "=") {
    zoom(ZOOM_STEP);
  } else if (event.key === "-") {
    zoom(1 / ZOOM_STEP);
  } else if (event.key === "0") {
    fit();
  } else if (event.target === $("viewer") && ARROWS[event.key]) {
    event.preventDefault();
    const [dx, dy] = ARROWS[event.key];
    const v = state.view;
    setView({ ...v, x: v.x + dx * v.w * 0.1, y: v.y + dy * v.h * 0.1 });
  }
}

function wireDrop() {
  let depth = 0;
  const drop = $("drop");
  document.addEventListener("dragenter", (e) => {
    e.preventDefault();
    depth += 1;
    drop.hidden = false;
  });
  document.addEventListener("dragleave", () => {
    depth = Math.max(0, depth - 1);
    if (!depth) drop.hidden = true;
  });
  document.addEventListener("dragover", (e) => e.preventDefault());
  document.addEventListener("drop", (e) => {
    e.preventDefault();
    depth = 0;
    drop.hidden = true;
    const file = e.dataTransfer && e.dataTransfer.files[0];
    if (file) openFile(file);
  });
}

async function showModel() {
  try {
    const response = await fetch("/v1/model");
    if (!response.ok) return;
    const m = await response.json();
    $("model").textContent = `model ${m.name} (cobbnet ${m.version}, sha256 ${m.sha256.slice(0, 12)}…)`;
  } catch {
    // the footer line is a courtesy; the page works without it
  }
}

function init() {
  $("open").addEventListener("click", () => $("file").click());
  $("file").addEventListener("change", (e) => {
    openFile(e.target.files[0]);
    e.target.value = "";
  });
  $("undo").addEventListener("click", undo);
  $("redo").addEventListener("click", redo);
  $("zoom-in").addEventListener("click", () => zoom(ZOOM_STEP));
  $("zoom-out").addEventListener("click", () => zoom(1 / ZOOM_STEP));
  $("zoom-fit").addEventListener("click", fit);
  for (const kind of ["json", "csv", "pdf"]) $(`download-${kind}`).addEventListener("click", () => download(kind));
  const view = $("view");
  view.addEventListener("wheel", wheel, { passive: false });
  view.addEventListener("pointerdown", startPan);
  view.addEventListener("pointermove", movePan);
  view.addEventListener("pointerup", endPan);
  view.addEventListener("pointercancel", endPan);
  window.addEventListener("resize", scaleMarks);
  document.addEventListener("keydown", globalKeys);
  wireDrop();
  showModel();
}

// for tests and scripts: the page's state and its CSV writer
window.cobbnet = { state, csvText, correctedResult, settled };
init();
