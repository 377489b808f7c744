// Finished and deleted jobs of a namespace, from the history API, filtered and paged.

import { ApiError, getJson, paths, withQuery } from "../api.js";
import { h, section } from "../dom.js";
import { formatNumber, formatTime } from "../describe.js";
import { link } from "../routes.js";

const FILTERS = ["phase", "name", "since", "until", "labelSelector"];
const PAGE = 100;

export async function render(main, { namespace, query }, { signal }) {
  const current = Object.fromEntries(FILTERS.map((key) => [key, query?.get(key) || ""]));
  const form = filterForm(namespace, current);
  const tbody = h("tbody");
  const more = h("button", { id: "history-more", type: "button", hidden: true }, "Load more");
  const status = h("p", { id: "history-status", class: "muted" }, "loading…");
  const tableEl = h(
    "table",
    { id: "history-table" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        ["Name", "Phase", "Reason", "Queue", "Created", "Finished", "Deleted", "Restarts", "Final step", "Final loss"].map(
          (t) => h("th", {}, t),
        ),
      ),
    ),
    tbody,
  );
  const panel = section(`History of ${namespace}`, form, status, tableEl, more);
  main.append(panel);

  let cont = "";
  let shown = 0;
  async function loadPage() {
    more.disabled = true;
    const path = withQuery(paths.history(namespace), { ...apiFilters(current), limit: PAGE, continue: cont });
    let page;
    try {
      page = await getJson(path, { signal });
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        tableEl.hidden = true;
        status.id = "history-unavailable";
        status.textContent = `This control plane has no job history (the API answered 404 ${error.reason}: ${error.detail}).`;
        return;
      }
      throw error;
    }
    const fragment = document.createDocumentFragment();
    for (const item of page.items || []) fragment.append(historyRow(namespace, item));
    tbody.append(fragment);
    shown += (page.items || []).length;
    cont = page.continue || "";
    more.hidden = !cont;
    more.disabled = false;
    status.textContent = shown ? `${shown} finished or deleted job${shown === 1 ? "" : "s"}${cont ? " so far" : ""}` : "No job matches.";
    tableEl.dataset.complete = cont ? "false" : "true";
  }
  more.addEventListener("click", () => loadPage());
  await loadPage();
}

// The filters as the API takes them: times as RFC 3339 (the form's are local times).
export function apiFilters(filters) {
  const out = {};
  for (const key of FILTERS) {
    const value = (filters[key] || "").trim();
    if (!value) continue;
    if (key === "since" || key === "until") {
      const ms = Date.parse(value);
      out[key] = Number.isFinite(ms) ? new Date(ms).toISOString() : value;
    } else out[key] = value;
  }
  return out;
}

function filterForm(namespace, current) {
  const phase = h(
    "select",
    { name: "phase", id: "history-phase" },
    ["", "Succeeded", "Failed", "Running", "Suspended", "Queued", "Pending", "Starting", "Restarting"].map((p) => h("option", { value: p }, p || "any phase")),
  );
  phase.value = current.phase;
  const input = (name, props = {}) => h("input", { name, id: `history-${name}`, value: current[name], ...props });
  const form = h(
    "form",
    { class: "toolbar", id: "history-filters" },
    phase,
    input("name", { placeholder: "name" }),
    h("label", {}, "since ", input("since", { type: "datetime-local" })),
    h("label", {}, "until ", input("until", { type: "datetime-local" })),
    input("labelSelector", { placeholder: "label selector, e.g. team=nlp" }),
    h("button", { type: "submit" }, "Filter"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = Object.fromEntries(new FormData(form).entries());
    location.hash = link.history(namespace, data);
  });
  return form;
}

function historyRow(namespace, item) {
  return h(
    "tr",
    { dataset: { job: item.name, uid: item.uid, phase: item.phase || "" } },
    h("td", {}, h("a", { href: link.record(namespace, item.uid) }, item.name)),
    h("td", { class: "phase" }, h("span", { class: `phase-${item.phase}` }, item.phase || "")),
    h("td", {}, [item.reason, item.message].filter(Boolean).join(": ")),
    h("td", {}, item.queue || ""),
    h("td", {}, formatTime(item.createdAt)),
    h("td", {}, formatTime(item.finishedAt)),
    h("td", { class: "deleted" }, formatTime(item.deletedAt)),
    h("td", {}, String(item.restarts ?? "")),
    h("td", {}, String(item.finalStep ?? "")),
    h("td", {}, formatNumber(item.finalLoss, 4)),
  );
}
