// The playground: a form over POST /v1/videos, live progress from the job's event stream, the
// finished video with its rewards, a gallery of recent jobs and an A/B comparison played in sync,
// with frame strips and a per-pixel difference of the two videos.
import * as api from "/static/api.js";
import { RewardChart, RewardSeries } from "/static/chart.js";
import { hideEffect, showEffect } from "/static/compare.js";

const $ = (selector, root = document) => root.querySelector(selector);
const SEARCH_MODES = new Set(["best_of_n", "fk"]);
const state = { models: new Map(), running: new Set(), compared: [], reference: null };
const chart = new RewardChart($("#chart"));

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
    const objective = Object.assign(document.createElement("span"), { className: "objective", textContent: name });
    label.title = `Weight of ${name} in the guided reward, -1 to 1: + pushes it up, − down, 0 leaves it alone`;
    label.append(objective, range, out);
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
  showReferenceField(model);
  const g = model.reward_guidance_defaults;
  if (g) {
    $("#strength").value = g.strength;
    $("#window-lo").value = g.window[0];
    $("#window-hi").value = g.window[1];
    $("#mode").value = g.mode;
  }
}

// --- image-to-video (a first frame) and video-to-video (a clip), sent as input_reference (a data: URL) --

const IMAGE_TYPES = ["image/png", "image/jpeg", "image/webp"];
const VIDEO_TYPES = ["video/mp4", "video/webm"];

// What the selected model takes: an image (none, optional or required) and whether a clip.
function referenceKinds(model = state.models.get($("#model").value) || {}) {
  return { image: model.input_reference || "none", video: Boolean(model.input_reference_video) };
}

function showReferenceField(model) {
  const { image, video } = referenceKinds(model);
  const takesImage = image !== "none";
  $("#image-field").hidden = !takesImage && !video;
  $("#image-need").textContent = image === "required" ? "(this model needs one)" : image === "optional" || video ? "(optional)" : "";
  $("#reference-label").textContent = takesImage && video ? "First frame or clip" : video ? "Clip to start from" : "First frame";
  $("#reference-hint").textContent = [
    takesImage ? "Image-to-video: an image (PNG, JPEG or WebP) is the first frame, resized to the video's size when its aspect ratio is close to it." : "",
    video ? "Video-to-video: an MP4 or WebM clip is noised to the denoise strength and sampled from there." : "",
    "Choose a file or drop one on the form.",
  ].filter(Boolean).join(" ");
  $("#input-reference").accept = [...(takesImage ? IMAGE_TYPES : []), ...(video ? VIDEO_TYPES : [])].join(",");
  if (state.reference && !accepts(state.reference.type)) clearReference();
}

function accepts(type) {
  const { image, video } = referenceKinds();
  return (image !== "none" && IMAGE_TYPES.includes(type)) || (video && VIDEO_TYPES.includes(type));
}

function setReference(file) {
  if (!file) return;
  if (!accepts(file.type)) {
    const wanted = $("#input-reference").accept.split(",").map((t) => t.split("/")[1].toUpperCase()).join(", ");
    showError(`input_reference: ${file.name} (${file.type || "unknown type"}) is not what this model takes: ${wanted}`);
    return;
  }
  const reader = new FileReader();
  reader.onload = () => {
    state.reference = { type: file.type, url: reader.result, video: VIDEO_TYPES.includes(file.type) };
    const preview = state.reference.video ? "#video-preview" : "#image-preview";
    const other = state.reference.video ? "#image-preview" : "#video-preview";
    $(preview).src = reader.result;
    $(preview).hidden = $("#clear-image").hidden = false;
    $(other).hidden = true;
    $(other).removeAttribute("src");
    $("#strength-field").hidden = !state.reference.video;
    showError(null);
  };
  reader.readAsDataURL(file);
}

function clearReference() {
  state.reference = null;
  $("#input-reference").value = "";
  for (const preview of ["#image-preview", "#video-preview"]) {
    $(preview).removeAttribute("src");
    $(preview).hidden = true;
  }
  $("#clear-image").hidden = $("#strength-field").hidden = true;
}

function dropReference(event) {
  const file = event.dataTransfer && event.dataTransfer.files[0];
  if (!file || $("#image-field").hidden) return;
  event.preventDefault();
  setReference(file);
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

// The request body of the form, with these objective weights (none: an unguided request) and seed.
function requestBody(weights, seed = number("#seed", parseInt)) {
  const body = {
    model: $("#model").value, prompt: $("#prompt").value, seed,
    num_inference_steps: number("#steps", parseInt), num_frames: number("#frames", parseInt),
    size: `${number("#width", parseInt)}x${number("#height", parseInt)}`, guidance_scale: number("#cfg"),
  };
  const negative = $("#negative-prompt").value.trim();
  if (negative) body.negative_prompt = negative;
  if ($("#checkpoint").value) body.checkpoint = $("#checkpoint").value;
  if (!$("#checkpoint-scale").disabled) body.checkpoint_scale = number("#checkpoint-scale");
  if (state.reference && !$("#image-field").hidden) {
    body.input_reference = state.reference.url;
    if (state.reference.video) body.denoise_strength = number("#denoise-strength");
  }
  if (Object.keys(weights).length) {
    const mode = $("#mode").value;
    body.reward_guidance = { weights, strength: number("#strength"), window: [number("#window-lo"), number("#window-hi")], mode };
    if (SEARCH_MODES.has(mode)) body.reward_guidance.particles = number("#particles", parseInt);
    if ($("#compare-unguided").checked) body.compare_unguided = true;
  }
  for (const key of Object.keys(body)) if (body[key] === null) delete body[key];
  return body;
}

function describeWeights(weights) {
  const entries = Object.entries(weights);
  return entries.length ? entries.map(([k, v]) => `${k}=${v}`).join(", ") : "unguided";
}

// --- running a job ----------------------------------------------------------------------------

// One job as the page follows it: its status, progress, per-step rewards and, once it has ended, its
// video object, kept per run so that whatever shows the run shows all of it together.
class Run {
  constructor(label = "") {
    this.label = label; // "A" or "B" in a comparison
    this.jobId = null;
    this.text = "submitting";
    this.progress = 0;
    this.series = new RewardSeries();
    this.video = null;
  }

  // A job that ended before the page followed it (a gallery card): no per-step rewards to show.
  static ended(video) {
    return Object.assign(new Run(), { jobId: video.id, text: video.status, progress: 100, video });
  }

  get status() {
    return `${[this.label, this.jobId].filter(Boolean).join(" ")}: ${this.text}`;
  }
}

// The Live section shows one run: its status line, progress bar, reward chart, and once it has ended
// its video, result and download link; never a mix of two runs.
const live = {
  run: new Run(),
  shownVideo: undefined,
  follow(run) {
    live.run = run;
    live.render();
  },
  render() {
    const { run } = live;
    $("#status").textContent = run.status;
    $("#progress").value = run.progress;
    chart.show(run.series);
    if (live.shownVideo !== run.video) {
      live.shownVideo = run.video;
      showInPlayer(run.video).catch(showError);
    }
  },
  update(run) {
    if (run === live.run) live.render();
  },
};
window.playground = { chart, live, state }; // for the browser test and the screenshot script

// Submits ``body`` and follows its events into ``run``, calling ``changed(run)`` after each and once
// more with the ended job's video object, which it resolves to.
async function runJob(body, run, changed) {
  const job = await api.createVideo(body);
  run.jobId = job.id;
  state.running.add(job.id);
  $("#cancel").disabled = false;
  const update = (text, progress = run.progress) => {
    run.text = text;
    run.progress = progress;
    changed(run);
  };
  update("queued");
  try {
    await api.streamEvents(job.id, (kind, data) => {
      if (kind === "started") update(`running in a batch of ${data.batch_size}`);
      else if (kind === "step") {
        run.series.add(data.step, data.steps, data.rewards);
        update(`step ${data.step}/${data.steps}, t=${data.t.toFixed(3)}`, data.progress);
      } else if (kind === "completed") update("completed", 100);
      else if (kind === "failed") update(`failed: ${data.error.message}`);
      else if (kind === "cancelled") update("cancelled");
    });
  } finally {
    state.running.delete(job.id);
    $("#cancel").disabled = state.running.size === 0;
  }
  run.video = await api.getVideo(job.id);
  changed(run);
  return run.video;
}

const REWARD_TITLE = "The reward model's score of the final latents: what guidance pushed up. z: the optimised "
  + "reward's own score, against unguided samples (0 = a typical unguided clip); not evidence on its own";
const JUDGE_TITLE = "A held-out judge's score (judge_scores): guidance did not see this judge";
const TWIN_TITLE = "compare_unguided: the same request without guidance, run in the same batch";
const signed = (v) => `${v >= 0 ? "+" : ""}${Number(v.toPrecision(4))}`;

// The verdict of a job's unguided twin, one line each: the objectives flagged, none, or why there is none.
function hackingLines(video) {
  const twin = video.unguided;
  if (!twin) return [];
  if (twin.error) return [`no comparison: ${twin.error}`];
  if (video.reward_hacking === null) return ["not judged: no held-out judge scores an objective guidance pushed up, by name"];
  if (!video.reward_hacking.length) return ["none: no held-out judge of an objective guidance pushed up says it fell"];
  return video.reward_hacking.map((c) => `guidance raised ${c.objective} while judge ${c.judge} says it fell `
    + `(reward ${signed(c.reward_change)}, judge ${signed(c.judge_change)} vs the unguided twin)`);
}

// " (unguided twin X)" after a figure the twin also has.
function twinFigure(value) {
  return value === undefined ? "" : ` (unguided twin ${value.toFixed(4)})`;
}

function showResult(dl, video) {
  const rows = [["status", video.status], ["seed", video.seed]];
  const flagged = (video.reward_hacking || []).length > 0;
  for (const line of hackingLines(video)) rows.push(["reward hacking", line, TWIN_TITLE, flagged ? "warning" : ""]);
  const twin = video.unguided || {};
  if (video.rewards) {
    for (const [k, v] of Object.entries(video.rewards)) {
      const z = video.rewards_z && video.rewards_z[k] !== undefined ? ` (z ${video.rewards_z[k] >= 0 ? "+" : ""}${video.rewards_z[k].toFixed(2)})` : "";
      rows.push([`optimised reward ${k} (what guidance pushed up)`, v.toFixed(4) + z + twinFigure((twin.rewards || {})[k]), REWARD_TITLE]);
    }
  }
  for (const [judge, scores] of Object.entries(video.judge_scores || {})) {
    const other = (twin.judge_scores || {})[judge] || {};
    for (const [k, v] of Object.entries(scores)) rows.push([`held-out judge ${judge}: ${k}`, v.toFixed(4) + twinFigure(other[k]), JUDGE_TITLE]);
  }
  const g = video.reward_guidance;
  rows.push(["guidance", g ? `${describeWeights(g.weights)}; ${g.mode}, strength ${g.strength}, window ${g.window.join("-")}` : "unguided"]);
  for (const key of ["batch_size", "queue_time_s", "inference_time_s", "encode_time_s", "cost_vs_unguided", "denoiser_passes", "peak_memory_mb"]) {
    if (video[key] !== null && video[key] !== undefined) rows.push([key.replace(/_/g, " "), video[key]]);
  }
  if (video.error) rows.push(["error", video.error.message]);
  dl.replaceChildren(...rows.flatMap(([k, v, title, className]) => {
    const dt = document.createElement("dt"), dd = document.createElement("dd");
    dt.textContent = k;
    dd.textContent = String(v);
    if (title) dt.title = title;
    if (className) dt.className = dd.className = className;
    return [dt, dd];
  }));
}

// The Live section's warning line: shown while the run it shows has reward hacking flagged.
function showHacking(video) {
  const flagged = video && (video.reward_hacking || []).length > 0;
  $("#hacking").hidden = !flagged;
  $("#hacking").textContent = flagged ? `Reward hacking: ${hackingLines(video).join("; ")}` : "";
}

async function play(video, element) {
  if (video.status !== "completed") return null;
  element.src = await api.contentUrl(video.id);
  return element.src;
}

// The Live section's player, result and download link: those of ``video``, or empty for none.
async function showInPlayer(video) {
  const player = $("#player"), link = $("#download");
  player.removeAttribute("src");
  link.hidden = true;
  showHacking(video);
  if (!video) {
    $("#result").replaceChildren();
    return;
  }
  showResult($("#result"), video);
  if (video.status !== "completed") return;
  const url = await api.contentUrl(video.id);
  if (live.shownVideo !== video) return; // the live view moved on to another run meanwhile
  player.src = url;
  link.href = url;
  link.download = `${video.id}.mp4`;
  link.hidden = false;
}

function showEnded(video) {
  for (const radio of document.querySelectorAll("#follow input")) radio.checked = false;
  live.follow(Run.ended(video));
}

async function generate(event) {
  event.preventDefault();
  showError(null);
  const body = requestBody(weightsOf($("#weights")));
  $("#follow").hidden = true;
  live.follow(new Run());
  try {
    await runJob(body, live.run, live.update);
  } catch (error) {
    showError(error);
  }
  await refreshGallery();
}

// --- compare ------------------------------------------------------------------------------------

function showInFigure(figure, run) {
  $(".status", figure).textContent = run.status;
  $("progress", figure).value = run.progress;
}

// A with the form's seed and weights, B with its own weights and seed B (default: A's seed); the
// live view follows A unless the user picks B.
async function compare() {
  showError(null);
  if ($("#seed").value.trim() === "") $("#seed").value = Math.floor(Math.random() * 2 ** 31);
  const seedA = number("#seed", parseInt);
  const sides = [
    { figure: $("#compare-a"), weights: weightsOf($("#weights")), seed: seedA, run: new Run("A") },
    { figure: $("#compare-b"), weights: weightsOf($("#weights-b")), seed: number("#seed-b", parseInt) ?? seedA, run: new Run("B") },
  ];
  state.compared = sides.map((side) => side.run);
  $("#follow input[value=A]").checked = true;
  $("#follow").hidden = false;
  live.follow(sides[0].run);
  $("#compare-view").hidden = false;
  hideEffect();
  try {
    const videos = await Promise.all(sides.map(async ({ figure, weights, seed, run }) => {
      $("figcaption", figure).textContent = `${run.label}: ${describeWeights(weights)} (seed ${seed})`;
      $("dl", figure).replaceChildren();
      showInFigure(figure, run);
      const video = await runJob(requestBody(weights, seed), run, (changed) => {
        showInFigure(figure, changed);
        live.update(changed);
      });
      showResult($("dl", figure), video);
      return { video, url: await play(video, $("video", figure)) };
    }));
    if (videos.every(({ video }) => video.status === "completed")) {
      playBoth();
      await showEffect(videos.map(({ video }) => video), videos.map(({ url }) => url));
    }
  } catch (error) {
    showError(error);
  }
  await refreshGallery();
}

function followPicked(event) {
  live.follow(state.compared[event.target.value === "A" ? 0 : 1]);
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
    if ((video.reward_hacking || []).length) {
      card.append(Object.assign(document.createElement("div"), { className: "warning",
        textContent: `reward hacking: ${video.reward_hacking.map((c) => `${c.objective} (judge ${c.judge})`).join(", ")}` }));
    }
    if (video.status === "completed") {
      const link = Object.assign(document.createElement("a"), { textContent: "download", download: `${video.id}.mp4` });
      link.addEventListener("click", async (event) => {
        if (!link.href) { event.preventDefault(); link.href = await api.contentUrl(video.id); link.click(); }
        event.stopPropagation();
      });
      card.append(link);
    }
    card.addEventListener("click", () => showEnded(video));
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
$("#input-reference").addEventListener("change", (event) => setReference(event.target.files[0]));
$("#clear-image").addEventListener("click", clearReference);
$("#job-form").addEventListener("dragover", (event) => { if (!$("#image-field").hidden) event.preventDefault(); });
$("#job-form").addEventListener("drop", dropReference);
$("#job-form").addEventListener("submit", generate);
$("#compare").addEventListener("click", compare);
$("#cancel").addEventListener("click", cancelRunning);
$("#play-both").addEventListener("click", playBoth);
$("#follow").addEventListener("change", followPicked);
$("#refresh").addEventListener("click", refreshGallery);
syncCompare();
loadModels();
