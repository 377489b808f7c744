// The REST API from the browser: the token, requests, pages, watch streams.
//
// The bearer token lives in sessionStorage (this tab only, gone when it closes) and leaves
// the page only as an Authorization header on fetch calls to this origin: never in a URL,
// never in a cookie, so a forged cross-site request carries no credentials.

import { SseParser } from "./sse.js";

const TOKEN_KEY = "carina.token";
const NAMESPACE_KEY = "carina.namespace";

export const session = {
  token: () => sessionStorage.getItem(TOKEN_KEY),
  namespace: () => sessionStorage.getItem(NAMESPACE_KEY) || "default",
  logIn(token, namespace) {
    sessionStorage.setItem(TOKEN_KEY, token);
    sessionStorage.setItem(NAMESPACE_KEY, namespace);
  },
  setNamespace(namespace) {
    sessionStorage.setItem(NAMESPACE_KEY, namespace);
  },
  logOut() {
    sessionStorage.removeItem(TOKEN_KEY);
  },
};

export class ApiError extends Error {
  constructor(status, reason, message) {
    super(`${status} ${reason}: ${message}`);
    this.status = status;
    this.reason = reason;
    this.detail = message;
  }
}

const seg = encodeURIComponent;

export const paths = {
  jobs: (ns) => `/api/v1/namespaces/${seg(ns)}/trainingjobs`,
  job: (ns, name) => `/api/v1/namespaces/${seg(ns)}/trainingjobs/${seg(name)}`,
  watchJobs: (ns) => `/api/v1/watch/namespaces/${seg(ns)}/trainingjobs`,
  watchJob: (ns, name) => `/api/v1/watch/namespaces/${seg(ns)}/trainingjobs/${seg(name)}`,
  clusterQueues: () => "/api/v1/clusterqueues",
  clusterQueue: (name) => `/api/v1/clusterqueues/${seg(name)}`,
  localQueues: (ns) => `/api/v1/namespaces/${seg(ns)}/localqueues`,
  history: (ns) => `/api/v1/namespaces/${seg(ns)}/history`,
  record: (ns, uid) => `/api/v1/namespaces/${seg(ns)}/history/${seg(uid)}`,
};

export function withQuery(path, query) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query || {})) {
    if (value !== "" && value !== null && value !== undefined) params.set(key, String(value));
  }
  const text = params.toString();
  return text ? `${path}?${text}` : path;
}

// fetch with the token; the Response when it is 2xx, an ApiError (the API's reason) if not.
export async function send(path, { method = "GET", signal, token, accept } = {}) {
  const bearer = token ?? session.token();
  const headers = { Accept: accept || "application/json" };
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  const response = await fetch(path, {
    method,
    headers,
    signal,
    credentials: "omit",
    cache: "no-store",
    redirect: "error",
  });
  if (response.ok) return response;
  let reason = response.statusText || "Error";
  let message = "";
  try {
    const body = await response.json();
    reason = body?.detail?.reason || reason;
    message = body?.detail?.message || JSON.stringify(body?.detail ?? body);
  } catch {
    message = "the server gave no reason";
  }
  throw new ApiError(response.status, reason, message);
}

export async function getJson(path, options) {
  return (await send(path, options)).json();
}

export async function getText(path, options) {
  return (await send(path, { ...options, accept: "text/plain" })).text();
}

export async function post(path, options) {
  return (await send(path, { ...options, method: "POST" })).json();
}

export async function remove(path, options) {
  return (await send(path, { ...options, method: "DELETE" })).json();
}

// Every page of a list, a page at a time: `onPage(items)` as each arrives. The first page is
// small so something shows at once; later ones are big so the list completes in few calls.
export async function eachPage(path, onPage, { signal, first = 50, rest = 500, key } = {}) {
  let cont = "";
  let limit = first;
  do {
    const page = await getJson(withQuery(path, { limit, continue: cont }), { signal });
    onPage(page.items || []);
    cont = key ? key(page) : page.metadata?.continue || "";
    limit = rest;
  } while (cont);
}

// Follow a watch stream until `signal` aborts: `onEvent({type, object})` for each change,
// `onState("live" | "reconnecting", error?)` as the connection comes and goes. A dropped
// stream is opened again after a pause (it starts with ADDED for what is there now, so
// nothing is missed); 401 and 403 end it, as retrying cannot help.
export async function follow(path, { signal, onEvent, onState }) {
  let pause = 1000;
  while (!signal.aborted) {
    try {
      const response = await send(path, { signal, accept: "text/event-stream" });
      onState?.("live");
      pause = 1000;
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      const parser = new SseParser();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        for (const event of parser.push(value)) {
          onEvent({ type: event.type, object: JSON.parse(event.data) });
        }
      }
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof ApiError && [401, 403, 404].includes(error.status)) {
        onState?.("ended", error);
        return;
      }
      onState?.("reconnecting", error);
    }
    if (signal.aborted) return;
    onState?.("reconnecting");
    await new Promise((resolve) => setTimeout(resolve, pause));
    pause = Math.min(pause * 2, 15000);
  }
}
