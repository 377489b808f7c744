// The jobs of a namespace: paged in through the list API, rendered as each page arrives,
// then kept current by the namespace's watch stream (one connection, not a poll per job).

import { eachPage, follow, paths } from "../api.js";
import { h } from "../dom.js";
import { insertionIndex, rowFacts, rowKey } from "../describe.js";
import { link } from "../routes.js";

export async function render(main, { namespace }, { signal }) {
  const count = h("span", { id: "job-count" }, "loading…");
  const live = h("span", { id: "live", class: "badge" }, "not watching");
  const filter = h("input", {
    id: "job-filter",
    type: "search",
    placeholder: "filter by name or phase",
  });
  const tbody = h("tbody");
  const tableEl = h(
    "table",
    { id: "jobs-table", class: "jobs", dataset: { complete: "false" } },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        ["Name", "Phase", "Queue", "Why pending", "Progress", "Restarts", "Created"].map((t) =>
          h("th", {}, t),
        ),
      ),
    ),
    tbody,
  );
  main.append(
    h(
      "section",
      { class: "panel" },
      h("h2", {}, `Jobs in ${namespace}`),
      h("p", { class: "toolbar" }, count, " ", live, " ", filter),
      tableEl,
    ),
  );

  const rows = new Map(); // name -> {tr, key}
  const names = []; // sorted, as the table is
  let query = "";

  function matches(facts) {
    return !query || facts.name.includes(query) || facts.phase.toLowerCase().includes(query);
  }

  function upsert(job, fragment) {
    const facts = rowFacts(job);
    const key = rowKey(facts);
    const known = rows.get(facts.name);
    if (known && known.key === key) return;
    const tr = drawRow(namespace, facts);
    tr.hidden = !matches(facts);
    if (known) {
      known.tr.replaceWith(tr);
      rows.set(facts.name, { tr, key, facts });
      return;
    }
    rows.set(facts.name, { tr, key, facts });
    if (fragment) {
      // A page of the list: names come sorted and after every row already there.
      names.push(facts.name);
      fragment.append(tr);
      return;
    }
    const at = insertionIndex(names, facts.name);
    const before = at < names.length ? rows.get(names[at]).tr : null;
    names.splice(at, 0, facts.name);
    tbody.insertBefore(tr, before);
  }

  function drop(job) {
    const name = job?.metadata?.name;
    const known = rows.get(name);
    if (!known) return;
    known.tr.remove();
    rows.delete(name);
    names.splice(names.indexOf(name), 1);
  }

  function showCount() {
    count.textContent = `${rows.size} job${rows.size === 1 ? "" : "s"}`;
  }

  filter.addEventListener("input", () => {
    query = filter.value.trim().toLowerCase();
    for (const { tr, facts } of rows.values()) tr.hidden = !matches(facts);
  });

  // User Timing marks (bench/console_jobs.py reads them; so can a browser's devtools).
  performance.clearMarks("carina:jobs:first-page");
  performance.clearMarks("carina:jobs:complete");
  let pages = 0;
  await eachPage(
    paths.jobs(namespace),
    (items) => {
      const fragment = document.createDocumentFragment();
      for (const job of items) upsert(job, fragment);
      tbody.append(fragment);
      showCount();
      if (pages++ === 0) performance.mark("carina:jobs:first-page");
    },
    { signal },
  );
  tableEl.dataset.complete = "true";
  performance.mark("carina:jobs:complete");

  follow(paths.watchJobs(namespace), {
    signal,
    onEvent: ({ type, object }) => {
      if (type === "DELETED") drop(object);
      else upsert(object, null);
      showCount();
    },
    onState: (state, error) => {
      live.textContent = state === "live" ? "live" : state;
      live.title = error ? String(error.message || error) : "";
      live.dataset.state = state;
    },
  });
}

function drawRow(namespace, facts) {
  const phase = facts.suspended && facts.phase !== "Suspended" ? `${facts.phase} (suspending)` : facts.phase;
  const bar =
    facts.fraction === null ? null : h("progress", { max: 1, value: facts.fraction.toFixed(4) });
  return h(
    "tr",
    { dataset: { job: facts.name, phase: facts.phase } },
    h("td", {}, h("a", { href: link.job(namespace, facts.name) }, facts.name)),
    h("td", { class: "phase" }, h("span", { class: `phase-${facts.phase}` }, phase)),
    h("td", { class: "queue" }, facts.queue),
    h("td", { class: "why" }, facts.why),
    h("td", { class: "progress" }, bar, " ", h("span", { class: "steps" }, facts.progress)),
    h("td", { class: "restarts" }, String(facts.restarts)),
    h("td", { class: "created" }, facts.created.replace("T", " ")),
  );
}
