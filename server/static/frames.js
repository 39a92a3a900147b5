// Frames of finished videos as pixels: a <video> element is seeked to a time, the page waits for its
// `seeked` event and draws the frame into a canvas. The videos are same-origin blob: URLs, so the
// canvases stay readable and two frames can be compared pixel by pixel.

function nextEvent(element, name) {
  return new Promise((resolve, reject) => {
    const fail = () => reject(new Error(`the video could not be decoded (${element.error && element.error.message})`));
    element.addEventListener(name, () => { element.removeEventListener("error", fail); resolve(); }, { once: true });
    element.addEventListener("error", fail, { once: true });
  });
}

// A detached, muted <video> of ``url`` with its first frame decoded: one per video, kept for seeking.
export async function openVideo(url) {
  const video = Object.assign(document.createElement("video"), { muted: true, preload: "auto", playsInline: true });
  const loaded = nextEvent(video, "loadeddata");
  video.src = url;
  await loaded;
  return video;
}

// ``count`` frame indices spread over ``numFrames``, the first and the last included.
export function frameIndices(numFrames, count) {
  const n = Math.min(count, numFrames);
  return Array.from({ length: n }, (_, k) => (n === 1 ? 0 : Math.round((k * (numFrames - 1)) / (n - 1))));
}

// The time in the middle of frame ``index``: a seek there lands on that frame, not on a boundary.
export function frameTime(index, fps) {
  return (index + 0.5) / fps;
}

// Seeks ``video`` to ``time`` and draws that frame into a new canvas of the video's own size.
export async function frameAt(video, time) {
  const seeked = nextEvent(video, "seeked");
  video.currentTime = Math.min(time, Math.max(video.duration - 1e-3, 0));
  await seeked;
  const canvas = Object.assign(document.createElement("canvas"), { width: video.videoWidth, height: video.videoHeight });
  canvas.getContext("2d").drawImage(video, 0, 0);
  return canvas;
}

// |A - B| per pixel (the mean over R, G and B, in levels 0-255) of two canvases of one size.
export function difference(canvasA, canvasB) {
  const { width, height } = canvasA;
  if (canvasB.width !== width || canvasB.height !== height) {
    throw new Error(`A is ${width}x${height} and B ${canvasB.width}x${canvasB.height}: no pixel difference`);
  }
  const a = canvasA.getContext("2d").getImageData(0, 0, width, height).data;
  const b = canvasB.getContext("2d").getImageData(0, 0, width, height).data;
  const levels = new Float32Array(width * height);
  let sum = 0, max = 0;
  for (let p = 0; p < levels.length; p += 1) {
    const i = 4 * p;
    const d = (Math.abs(a[i] - b[i]) + Math.abs(a[i + 1] - b[i + 1]) + Math.abs(a[i + 2] - b[i + 2])) / 3;
    levels[p] = d;
    sum += d;
    if (d > max) max = d;
  }
  return { width, height, levels, mean: sum / levels.length, max };
}

// Black (0) through red and yellow to white (1).
function heat(x) {
  return [Math.min(1, 3 * x), Math.min(1, Math.max(0, 3 * x - 1)), Math.max(0, 3 * x - 2)].map((c) => Math.round(255 * c));
}

// Draws ``diff`` on ``canvas``, scaled so that the frame's largest difference is white.
export function drawHeatMap(canvas, diff) {
  canvas.width = diff.width;
  canvas.height = diff.height;
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(diff.width, diff.height);
  const scale = diff.max > 0 ? 1 / diff.max : 0;
  diff.levels.forEach((d, p) => {
    image.data.set([...heat(d * scale), 255], 4 * p);
  });
  ctx.putImageData(image, 0, 0);
}
