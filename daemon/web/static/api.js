// Talking to the daemon: one fetch wrapper that sends the API key (if any) in a header and turns every kind of
// failure into an Error whose message a person can read. Nothing here ever contacts another host.

const KEY_STORE = "perch.apiKey";

export class ApiError extends Error {
  constructor(message, status = 0) {
    super(message);
    this.status = status;
  }
}

// Thrown when the box wants a key (none given, or a wrong one): the page then asks for one.
export class AuthError extends ApiError {}

export function getKey() {
  try {
    return localStorage.getItem(KEY_STORE) || "";
  } catch {
    return "";
  }
}

export function setKey(key) {
  try {
    if (key) localStorage.setItem(KEY_STORE, key);
    else localStorage.removeItem(KEY_STORE);
  } catch {
    // private mode without storage: the key lives as long as the page
  }
  memoryKey = key;
}

let memoryKey = getKey();

export function authHeaders() {
  return memoryKey ? { Authorization: `Bearer ${memoryKey}` } : {};
}

function problem(status, body, fallback) {
  const message = (body && (body.error || body.message || body.Message)) || fallback;
  const code = (body && body.code) || status;
  return code === 401 ? new AuthError(message, 401) : new ApiError(message, code);
}

// fetch() that throws ApiError / AuthError; `as` is "json" (default), "blob" or "response" (for streams).
export async function api(path, { method = "GET", body, as = "json", signal } = {}) {
  let response;
  try {
    response = await fetch(path, { method, body, signal, headers: authHeaders(), cache: "no-store" });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(`cannot reach the Perch daemon (${err.message || "network error"})`);
  }
  const type = response.headers.get("Content-Type") || "";
  if (!response.ok) {
    let body = null;
    if (type.includes("json")) body = await response.json().catch(() => null);
    throw problem(response.status, body, `${path} answered HTTP ${response.status} ${response.statusText}`.trim());
  }
  if (as === "response") return response;
  if (as === "blob") return response.blob();
  let data;
  try {
    data = await response.json();
  } catch {
    throw new ApiError(`${path} did not answer with JSON`, response.status);
  }
  // CodeProject.AI semantics: an error is HTTP 200 with success:false and the real status in `code`.
  if (data && data.success === false) throw problem(response.status, data, `${path} failed`);
  return data;
}

export function postForm(path, fields) {
  const form = new FormData();
  for (const [name, value] of Object.entries(fields)) form.append(name, value);
  return api(path, { method: "POST", body: form });
}
