// The jobs API as the page uses it. Every call carries the key typed into the page (kept in
// sessionStorage so that /docs, opened from here, can use it too). Video and thumbnail bytes are
// fetched with the same header and shown through blob: URLs, because <video src> cannot send one;
// the event stream is read with fetch for the same reason (EventSource sends no headers).

const KEY_ITEM = "nrg-api-key";

export function apiKey() {
  return sessionStorage.getItem(KEY_ITEM) || "";
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY_ITEM, key);
  else sessionStorage.removeItem(KEY_ITEM);
}

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || null;
    this.param = error.param || null;
  }
}

function headers(extra = {}) {
  const key = apiKey();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

async function call(method, path, body) {
  const init = { method, headers: headers(body ? { "Content-Type": "application/json" } : {}) };
  if (body) init.body = JSON.stringify(body);
  const response = await fetch(path, init);
  const data = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

export const listModels = () => call("GET", "/v1/models");
export const createVideo = (body) => call("POST", "/v1/videos", body);
export const getVideo = (id) => call("GET", `/v1/videos/${encodeURIComponent(id)}`);
export const cancelVideo = (id) => call("DELETE", `/v1/videos/${encodeURIComponent(id)}`);
export const listVideos = (limit = 12) => call("GET", `/v1/videos?limit=${limit}`);

const blobs = new Map(); // "id/variant" -> object URL, fetched once per page

export async function contentUrl(id, variant = "video") {
  const cacheKey = `${id}/${variant}`;
  if (!blobs.has(cacheKey)) {
    const response = await fetch(`/v1/videos/${encodeURIComponent(id)}/content?variant=${variant}`,
                                 { headers: headers() });
    if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null));
    blobs.set(cacheKey, URL.createObjectURL(await response.blob()));
  }
  return blobs.get(cacheKey);
}

// Calls onEvent(kind, data) for each Server-Sent Event of the job until the stream ends.
export async function streamEvents(id, onEvent, signal) {
  const response = await fetch(`/v1/videos/${encodeURIComponent(id)}/events`,
                               { headers: headers({ Accept: "text/event-stream" }), signal });
  if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null));
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let kind = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) kind = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trim());
      }
      if (data.length) onEvent(kind, JSON.parse(data.join("\n")));
    }
  }
}
