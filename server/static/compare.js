// What changed between A and B, made visible: frame strips of both videos at the same frames, the
// per-pixel difference of the chosen frame as a heat map with its mean and max, and the jobs' own
// figures side by side (optimised rewards and held-out judge scores).
import { difference, drawHeatMap, frameAt, frameIndices, frameTime, openVideo } from "/static/frames.js";

const FRAME_COUNT = 5;
const $ = (selector, root = document) => root.querySelector(selector);

function element(tag, properties = {}, children = []) {
  const node = Object.assign(document.createElement(tag), properties);
  node.append(...children);
  return node;
}

function signed(value) {
  return `${value >= 0 ? "+" : ""}${value.toFixed(4)}`;
}

// The frames ``indices`` of each job's video, as canvases: {A: [...], B: [...]}.
async function drawFrames(jobs, urls, indices) {
  const videos = await Promise.all(urls.map(openVideo));
  const frames = { A: [], B: [] };
  for (const index of indices) {
    const [a, b] = await Promise.all(videos.map((video, i) => frameAt(video, frameTime(index, jobs[i].fps))));
    frames.A.push(a);
    frames.B.push(b);
  }
  return frames;
}

function showDifference(frames, indices, k) {
  const diff = difference(frames.A[k], frames.B[k]);
  drawHeatMap($("#difference-map"), diff);
  const rows = [["frame", String(indices[k])], ["mean |A − B|", `${diff.mean.toFixed(2)} levels`],
                ["max |A − B|", `${diff.max.toFixed(1)} levels`]];
  $("#difference-stats").replaceChildren(...rows.flatMap(([term, value]) => [element("dt", { textContent: term }),
                                                                             element("dd", { textContent: value })]));
  for (const node of $("#strips").querySelectorAll("[data-frame]")) {
    node.classList.toggle("selected", Number(node.dataset.frame) === k);
    if (node.tagName === "BUTTON") node.setAttribute("aria-pressed", String(Number(node.dataset.frame) === k));
  }
}

// A row of frame buttons (the frame numbers), then the A strip and the B strip, column by column.
function renderStrips(frames, indices, pick) {
  const strips = $("#strips");
  strips.style.setProperty("--frames", indices.length);
  const buttons = indices.map((index) => element("button", { type: "button", textContent: `frame ${index}`,
                                                                title: "show this frame's difference" }));
  const row = (label, canvases) => [element("span", { className: "strip-label", textContent: label }), ...canvases];
  strips.replaceChildren(element("span"), ...buttons, ...row("A", frames.A), ...row("B", frames.B));
  [buttons, frames.A, frames.B].forEach((nodes) => nodes.forEach((node, k) => {
    node.dataset.frame = String(k);
    node.addEventListener("click", () => pick(k));
  }));
}

// Rows of [measure, tooltip, value of A, value of B] for the figures both jobs report.
function metricRows(a, b) {
  const rows = [];
  for (const [k, v] of Object.entries(a.rewards || {})) {
    if (b.rewards && b.rewards[k] !== undefined) {
      rows.push([`optimised reward ${k} (what guidance pushed up)`,
                 "the reward model's score that guidance optimised: A above B is expected, not evidence on its own",
                 v, b.rewards[k]]);
    }
  }
  for (const [judge, scores] of Object.entries(a.judge_scores || {})) {
    const other = (b.judge_scores || {})[judge] || {};
    for (const [k, v] of Object.entries(scores)) {
      if (other[k] !== undefined) {
        rows.push([`held-out judge ${judge}: ${k}`, "a judge guidance did not see (judge_scores)", v, other[k]]);
      }
    }
  }
  return rows;
}

function renderMetricChanges(a, b) {
  const head = element("tr", {}, ["measure", "A", "B", "A − B"].map((text) => element("th", { textContent: text })));
  const rows = metricRows(a, b).map(([name, title, va, vb]) => element("tr", { title }, [
    element("th", { textContent: name, scope: "row" }), element("td", { textContent: va.toFixed(4) }),
    element("td", { textContent: vb.toFixed(4) }), element("td", { textContent: signed(va - vb) })]));
  if (!rows.length) rows.push(element("tr", {}, [element("td", { colSpan: 4, textContent: "the jobs report no figures to compare" })]));
  $("#metric-changes").replaceChildren(element("thead", {}, [head]), element("tbody", {}, rows));
}

export function hideEffect() {
  $("#effect").hidden = true;
}

// Shows the effect of A vs B for two finished jobs whose videos play from ``urls``.
export async function showEffect(jobs, urls) {
  const indices = frameIndices(Math.min(jobs[0].num_frames, jobs[1].num_frames), FRAME_COUNT);
  const frames = await drawFrames(jobs, urls, indices);
  const pick = (k) => showDifference(frames, indices, k);
  renderStrips(frames, indices, pick);
  pick(Math.floor(indices.length / 2));
  renderMetricChanges(jobs[0], jobs[1]);
  $("#effect").hidden = false;
}
