// The playground: a form over POST /v1/videos, live progress from the job's event stream, the
// finished video with its rewards, a gallery of recent jobs and an A/B comparison played in sync.
import * as api from "/static/api.js";
import { RewardChart } from "/static/chart.js";

const $ = (selector, root = document) => root.querySelector(selector);
const SEARCH_MODES = new Set(["best_of_n", "fk"]);
const state = { models: new Map(), running: new Set() };
const chart = new RewardChart($("#chart"));
window.playground = { chart, state }; // for the browser test and the screenshot script

function showError(error) {
  let text = error ? String(error.message || error) : "";
  if (error && error.status === 401) text = "This server needs an API key: type it above. (" + text + ")";
  $("#error").textContent = text;
}

function number(id, parse = Number) {
  const value = $(id).value.trim();
  return value === "" ? null : parse(value);
}

// --- models and the form --------------------------------------------------------------------

function sliders(container, objectives, initial) {
  container.replaceChildren(...objectives.map((name) => {
    const label = document.createElement("label");
    const range = Object.assign(document.createElement("input"),
      { type: "range", min: "-1", max: "1", step: "0.05", value: String(initial), name });
    range.id = `${container.id}-${name}`;
    const out = document.createElement("output");
    out.value = Number(initial).toFixed(2);
    range.addEventListener("input", () => { out.value = Number(range.value).toFixed(2); });
    label.append(name, range, out);
    return label;
  }));
}

function weightsOf(container) {
  const weights = {};
  for (const range of container.querySelectorAll("input[type=range]")) {
    if (Number(range.value) !== 0) weights[range.name] = Number(range.value);
  }
  return weights;
}

function fillModel(name) {
  const model = state.models.get(name);
  if (!model) return;
  const d = model.defaults;
  $("#steps").value = d.num_inference_steps;
  $("#width").value = d.width;
  $("#height").value = d.height;
  $("#frames").value = d.num_frames;
  $("#cfg").value = d.guidance_scale;
  $("#checkpoint").replaceChildren(new Option("base model", ""),
    ...model.checkpoints.map((c) => new Option(`${c.name} (${c.kind})`, c.name)));
  lockScale();
  const objectives = model.reward_objectives;
  $("#guidance-set").disabled = $("#compare-set").disabled = objectives.length === 0;
  sliders($("#weights"), objectives, 0);
  sliders($("#weights-b"), objectives, 0);
  const g = model.reward_guidance_defaults;
  if (g) {
    $("#strength").value = g.strength;
    $("#window-lo").value = g.window[0];
    $("#window-hi").value = g.window[1];
    $("#mode").value = g.mode;
  }
}

// The LoRA scale applies to LoRA checkpoints only (a full-weight checkpoint or the base model has none).
function lockScale() {
  const model = state.models.get($("#model").value);
  const chosen = model && model.checkpoints.find((c) => c.name === $("#checkpoint").value);
  $("#checkpoint-scale").disabled = !chosen || chosen.kind !== "lora";
}

async function loadModels() {
  try {
    const { data } = await api.listModels();
    state.models = new Map(data.map((m) => [m.id, m]));
    $("#model").replaceChildren(...data.map((m) => new Option(`${m.id} (${m.family})`, m.id)));
    fillModel(data[0].id);
    $("#key-status").textContent = api.apiKey() ? "key accepted" : "";
    showError(null);
    await refreshGallery();
  } catch (error) {
    showError(error);
    $("#key-status").textContent = error.status === 401 ? "this server needs a key" : "";
  }
}

// The request body of the form, with these objective weights (none: an unguided request).
function requestBody(weights) {
  const body = {
    model: $("#model").value, prompt: $("#prompt").value, seed: number("#seed", parseInt),
    num_inference_steps: number("#steps", parseInt), num_frames: number("#frames", parseInt),
    size: `${number("#width", parseInt)}x${number("#height", parseInt)}`, guidance_scale: number("#cfg"),
  };
  const negative = $("#negative-prompt").value.trim();
  if (negative) body.negative_prompt = negative;
  if ($("#checkpoint").value) body.checkpoint = $("#checkpoint").value;
  if (!$("#checkpoint-scale").disabled) body.checkpoint_scale = number("#checkpoint-scale");
  if (Object.keys(weights).length) {
    const mode = $("#mode").value;
    body.reward_guidance = { weights, strength: number("#strength"), window: [number("#window-lo"), number("#window-hi")], mode };
    if (SEARCH_MODES.has(mode)) body.reward_guidance.particles = number("#particles", parseInt);
  }
  for (const key of Object.keys(body)) if (body[key] === null) delete body[key];
  return body;
}

function describeWeights(weights) {
  const entries = Object.entries(weights);
  return entries.length ? entries.map(([k, v]) => `${k}=${v}`).join(", ") : "unguided";
}

// --- running a job ----------------------------------------------------------------------------

// Submits ``body`` and follows its events: ``view.onStep(data)``, ``view.progress`` (a <progress>),
// ``view.status(text)``. Resolves to the finished video object.
async function runJob(body, view) {
  const job = await api.createVideo(body);
  state.running.add(job.id);
  $("#cancel").disabled = false;
  view.status(`${job.id}: queued`);
  try {
    await api.streamEvents(job.id, (kind, data) => {
      if (kind === "started") view.status(`${job.id}: running in a batch of ${data.batch_size}`);
      else if (kind === "step") {
        view.progress.value = data.progress;
        view.status(`${job.id}: step ${data.step}/${data.steps}, t=${data.t.toFixed(3)}`);
        if (view.onStep) view.onStep(data);
      } else if (kind === "completed") { view.progress.value = 100; view.status(`${job.id}: completed`); }
      else if (kind === "failed") view.status(`${job.id}: failed: ${data.error.message}`);
      else if (kind === "cancelled") view.status(`${job.id}: cancelled`);
    });
  } finally {
    state.running.delete(job.id);
    $("#cancel").disabled = state.running.size === 0;
  }
  return api.getVideo(job.id);
}

function showResult(dl, video) {
  const rows = [["status", video.status], ["seed", video.seed]];
  if (video.rewards) {
    for (const [k, v] of Object.entries(video.rewards)) {
      const z = video.rewards_z && video.rewards_z[k] !== undefined ? ` (z ${video.rewards_z[k] >= 0 ? "+" : ""}${video.rewards_z[k].toFixed(2)})` : "";
      rows.push([`optimised reward ${k} (what guidance pushed up)`, v.toFixed(4) + z]);
    }
  }
  for (const [judge, scores] of Object.entries(video.judge_scores || {})) {
    for (const [k, v] of Object.entries(scores)) rows.push([`held-out judge ${judge}: ${k}`, v.toFixed(4)]);
  }
  const g = video.reward_guidance;
  rows.push(["guidance", g ? `${describeWeights(g.weights)}; ${g.mode}, strength ${g.strength}, window ${g.window.join("-")}` : "unguided"]);
  for (const key of ["batch_size", "queue_time_s", "inference_time_s", "encode_time_s", "cost_vs_unguided", "peak_memory_mb"]) {
    if (video[key] !== null && video[key] !== undefined) rows.push([key.replace(/_/g, " "), video[key]]);
  }
  if (video.error) rows.push(["error", video.error.message]);
  dl.replaceChildren(...rows.flatMap(([k, v]) => {
    const dt = document.createElement("dt"), dd = document.createElement("dd");
    dt.textContent = k;
    dd.textContent = String(v);
    return [dt, dd];
  }));
}

async function play(video, element) {
  if (video.status !== "completed") return;
  element.src = await api.contentUrl(video.id);
}

async function showInPlayer(video) {
  showResult($("#result"), video);
  if (video.status !== "completed") return;
  await play(video, $("#player"));
  const link = $("#download");
  link.href = $("#player").src;
  link.download = `${video.id}.mp4`;
  link.hidden = false;
}

const mainView = {
  progress: $("#progress"),
  status: (text) => { $("#status").textContent = text; },
  onStep: (data) => chart.add(data.step, data.rewards),
};

async function generate(event) {
  event.preventDefault();
  showError(null);
  const body = requestBody(weightsOf($("#weights")));
  chart.reset(body.num_inference_steps || 1);
  $("#progress").value = 0;
  try {
    await showInPlayer(await runJob(body, mainView));
  } catch (error) {
    showError(error);
  }
  await refreshGallery();
}

// --- compare ------------------------------------------------------------------------------------

async function compare() {
  showError(null);
  if ($("#seed").value.trim() === "") $("#seed").value = Math.floor(Math.random() * 2 ** 31);
  const weightsA = weightsOf($("#weights")), weightsB = weightsOf($("#weights-b"));
  const bodyA = requestBody(weightsA);
  chart.reset(bodyA.num_inference_steps || 1);
  $("#progress").value = 0;
  $("#compare-view").hidden = false;
  const panels = [[$("#compare-a"), weightsA, "A"], [$("#compare-b"), weightsB, "B"]];
  try {
    const videos = await Promise.all(panels.map(async ([figure, weights, label], i) => {
      $("figcaption", figure).textContent = `${label}: ${describeWeights(weights)} (seed ${$("#seed").value})`;
      $("dl", figure).replaceChildren();
      const view = { progress: $("progress", figure), status: (text) => { $("#status").textContent = `${label} ${text}`; } };
      if (i === 0) view.onStep = mainView.onStep;
      const video = await runJob(i === 0 ? bodyA : requestBody(weights), view);
      showResult($("dl", figure), video);
      await play(video, $("video", figure));
      return video;
    }));
    if (videos.every((v) => v.status === "completed")) playBoth();
  } catch (error) {
    showError(error);
  }
  await refreshGallery();
}

// Both videos from frame 0, and B follows A's play, pause and seek so the frames stay side by side.
function playBoth() {
  const [a, b] = [$("#compare-a video"), $("#compare-b video")];
  a.currentTime = 0;
  b.currentTime = 0;
  a.play().catch(() => {});
  b.play().catch(() => {});
}

function syncCompare() {
  const [a, b] = [$("#compare-a video"), $("#compare-b video")];
  a.addEventListener("play", () => b.play().catch(() => {}));
  a.addEventListener("pause", () => b.pause());
  a.addEventListener("seeked", () => { b.currentTime = a.currentTime; });
  a.addEventListener("timeupdate", () => { if (Math.abs(a.currentTime - b.currentTime) > 0.1) b.currentTime = a.currentTime; });
}

// --- gallery ------------------------------------------------------------------------------------

async function refreshGallery() {
  let data;
  try {
    ({ data } = await api.listVideos(12));
  } catch (error) {
    return; // the form's own error line already says why (e.g. a missing key)
  }
  const cards = await Promise.all(data.map(async (video) => {
    const card = document.createElement("div");
    card.className = "card";
    card.dataset.id = video.id;
    const img = document.createElement(video.status === "completed" ? "img" : "div");
    img.className = "thumb";
    if (video.status === "completed") {
      img.alt = video.prompt;
      img.src = await api.contentUrl(video.id, "thumbnail").catch(() => "");
    } else img.textContent = video.status;
    const prompt = Object.assign(document.createElement("div"), { className: "prompt", textContent: video.prompt });
    const rewards = video.rewards ? Object.entries(video.rewards).map(([k, v]) => `${k} ${v.toFixed(2)}`).join(" ") : "";
    const meta = Object.assign(document.createElement("div"), { className: "meta",
      textContent: `${video.status} · ${video.reward_guidance ? describeWeights(video.reward_guidance.weights) : "unguided"} ${rewards}` });
    card.append(img, prompt, meta);
    if (video.status === "completed") {
      const link = Object.assign(document.createElement("a"), { textContent: "download", download: `${video.id}.mp4` });
      link.addEventListener("click", async (event) => {
        if (!link.href) { event.preventDefault(); link.href = await api.contentUrl(video.id); link.click(); }
        event.stopPropagation();
      });
      card.append(link);
    }
    card.addEventListener("click", () => showInPlayer(video).catch(showError));
    return card;
  }));
  $("#gallery").replaceChildren(...cards);
}

// --- wiring -------------------------------------------------------------------------------------

async function cancelRunning() {
  try {
    await Promise.all([...state.running].map((id) => api.cancelVideo(id)));
  } catch (error) {
    showError(error);
  }
}

$("#api-key").value = api.apiKey();
$("#api-key").addEventListener("change", () => { api.setApiKey($("#api-key").value.trim()); loadModels(); });
$("#model").addEventListener("change", () => fillModel($("#model").value));
$("#checkpoint").addEventListener("change", lockScale);
$("#job-form").addEventListener("submit", generate);
$("#compare").addEventListener("click", compare);
$("#cancel").addEventListener("click", cancelRunning);
$("#play-both").addEventListener("click", playBoth);
$("#refresh").addEventListener("click", refreshGallery);
syncCompare();
loadModels();
