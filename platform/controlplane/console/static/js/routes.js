// The console's pages live in the URL's fragment (#/jobs/<ns>, ...): one HTML file, no
// server routes per page, and nothing of it reaches the server's logs.

const PATTERNS = [
  ["login", /^#?\/?login$/, []],
  ["jobs", /^#\/jobs\/([^/?]+)$/, ["namespace"]],
  ["job", /^#\/jobs\/([^/?]+)\/([^/?]+)$/, ["namespace", "name"]],
  ["queues", /^#\/queues\/([^/?]+)$/, ["namespace"]],
  ["history", /^#\/history\/([^/?]+)(?:\?(.*))?$/, ["namespace", "query"]],
  ["record", /^#\/history\/([^/?]+)\/([^/?]+)$/, ["namespace", "uid"]],
];

// { page, params } for a location hash; the login page for anything else.
export function parseRoute(hash) {
  for (const [page, pattern, names] of PATTERNS) {
    const match = pattern.exec(hash || "");
    if (!match) continue;
    const params = {};
    names.forEach((key, i) => {
      const raw = match[i + 1];
      if (key === "query") params.query = new URLSearchParams(raw || "");
      else params[key] = decodeURIComponent(raw);
    });
    return { page, params };
  }
  return { page: "login", params: {} };
}

const seg = encodeURIComponent;

export const link = {
  login: () => "#/login",
  jobs: (ns) => `#/jobs/${seg(ns)}`,
  job: (ns, name) => `#/jobs/${seg(ns)}/${seg(name)}`,
  queues: (ns) => `#/queues/${seg(ns)}`,
  history: (ns, filters = {}) => {
    const query = new URLSearchParams(
      Object.entries(filters).filter(([, v]) => v !== "" && v !== null && v !== undefined),
    ).toString();
    return `#/history/${seg(ns)}${query ? `?${query}` : ""}`;
  },
  record: (ns, uid) => `#/history/${seg(ns)}/${seg(uid)}`,
};
