// One job: what it is, how it is doing, what happened to it; suspend, resume, delete.
//
// The job itself comes from its watch stream; each change it reports also refreshes the
// series, the events and (when following) the log, at most every REFRESH_MS, so an idle job
// costs nothing and a busy one a few calls a second at most.

import { ApiError, follow, getJson, getText, paths, post, remove, withQuery } from "../api.js";
import { errorBox, h, pretty, replace, section, table } from "../dom.js";
import {
  conditionsOverTime,
  formatNumber,
  formatTime,
  isFinished,
  phaseOf,
  progressOf,
  queueOf,
  restartsOf,
  whyPending,
} from "../describe.js";
import { lineChart } from "../charts.js";
import { link } from "../routes.js";

const REFRESH_MS = 2000;

export async function render(main, { namespace, name }, { signal, fail }) {
  let job = await getJson(paths.job(namespace, name), { signal });

  const title = h("h2", {}, name, " ", h("span", { id: "job-phase", class: "badge" }));
  const live = h("span", { id: "live", class: "badge" }, "not watching");
  const actions = h("p", { class: "toolbar", id: "actions" });
  const notice = h("div", { id: "notice" });
  const summary = h("dl", { id: "summary", class: "facts" });
  const conditions = h("div", { id: "conditions" });
  const events = h("div", { id: "events" });
  const checkpoints = h("div", { id: "checkpoints" });
  const spec = h("div", { id: "spec" });
  const charts = h("div", { class: "charts" });
  const logBox = h("pre", { id: "log", class: "log" });
  const worker = h("select", { id: "log-worker" });
  const followLog = h("input", { id: "log-follow", type: "checkbox", checked: true });
  const tail = h("input", { id: "log-tail", type: "number", min: 1, max: 5000, value: "200" });
  const refreshLog = h("button", { id: "log-refresh", type: "button" }, "Refresh");

  main.append(
    h("section", { class: "panel" }, title, h("p", {}, live), actions, notice, summary),
    section("Loss and throughput", charts),
    section(
      "Log",
      h(
        "p",
        { class: "toolbar" },
        h("label", {}, "Worker ", worker),
        h("label", {}, "Lines ", tail),
        h("label", {}, followLog, " follow"),
        refreshLog,
      ),
      logBox,
    ),
    section("Conditions", conditions),
    section("Events", events),
    section("Checkpoints", checkpoints),
    section("Spec", spec),
  );

  const lossChart = lineChart(charts, {
    title: "Loss",
    xLabel: "time",
    yLabel: "loss",
    series: [],
  });
  const speedChart = lineChart(charts, {
    title: "Tokens per second",
    xLabel: "time",
    yLabel: "tokens/s",
    series: [],
  });

  let deleted = false;
  let shownSpec = "";

  function draw() {
    const phase = phaseOf(job);
    const badge = title.querySelector("#job-phase");
    badge.textContent = job.spec?.suspend && phase !== "Suspended" ? `${phase} (suspending)` : phase;
    badge.className = `badge phase-${phase}`;
    drawActions();
    drawSummary(summary, job);
    replace(conditions, conditionsTable(job));
    replace(checkpoints, checkpointFacts(job));
    const specText = JSON.stringify(job.spec);
    if (specText !== shownSpec) {
      // Only when it changed: a reader's selection in it survives status updates.
      shownSpec = specText;
      replace(spec, pretty(job.spec));
    }
    drawWorkers();
  }

  // The buttons are made once and only shown, hidden or disabled as the job changes, so a
  // click never lands on a button that a redraw has just replaced.
  const suspendButton = h("button", { id: "suspend", type: "button" }, "Suspend");
  const resumeButton = h("button", { id: "resume", type: "button" }, "Resume");
  const deleteButton = h("button", { id: "delete", type: "button" }, "Delete");
  actions.append(suspendButton, resumeButton, " ", deleteButton);
  suspendButton.addEventListener("click", () =>
    change(() => post(`${paths.job(namespace, name)}/suspend`)),
  );
  resumeButton.addEventListener("click", () =>
    change(() => post(`${paths.job(namespace, name)}/resume`)),
  );
  // Deleting takes a second click within five seconds; no dialog box.
  let armed = null;
  deleteButton.addEventListener("click", () => {
    if (!armed) {
      deleteButton.textContent = "Click again to delete";
      deleteButton.classList.add("danger");
      armed = setTimeout(() => {
        armed = null;
        deleteButton.textContent = "Delete";
        deleteButton.classList.remove("danger");
      }, 5000);
      return;
    }
    clearTimeout(armed);
    armed = null;
    deleteButton.disabled = true;
    change(() => remove(paths.job(namespace, name)));
  });

  function drawActions() {
    actions.hidden = deleted;
    const suspended = Boolean(job.spec?.suspend);
    const finished = isFinished(job);
    suspendButton.hidden = suspended;
    resumeButton.hidden = !suspended;
    suspendButton.disabled = finished;
    resumeButton.disabled = finished;
    if (job.metadata?.deletionTimestamp) deleteButton.disabled = true;
  }

  async function change(call) {
    replace(notice);
    try {
      job = await call();
      draw();
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) return fail(error);
      if (deleted) return; // the job went meanwhile: its notice stays
      replace(notice, errorBox(error, { id: "action-error" }));
    }
  }

  // The job is gone (its watch ended with 404, or a refresh met a 404): no actions, a link
  // to where it is kept.
  function showGone() {
    deleted = true;
    drawActions();
    replace(
      notice,
      h(
        "p",
        { id: "deleted", class: "warning" },
        "This job is gone. ",
        h("a", { href: link.history(namespace, { name }) }, "Find it in the history"),
      ),
    );
  }

  function drawWorkers() {
    const count = Math.max(1, Number(job.status?.workers?.total || 0), Number(job.spec?.replicas || 0));
    if (worker.options.length === count) return;
    const chosen = worker.value || "0";
    replace(worker, Array.from({ length: count }, (_, i) => h("option", { value: String(i) }, String(i))));
    worker.value = Number(chosen) < count ? chosen : "0";
  }

  async function loadSeries() {
    const series = await getJson(`${paths.job(namespace, name)}/metrics`, { signal });
    lossChart.update([{ label: "loss", points: series.loss }]);
    speedChart.update([{ label: "tokens/s", points: series.tokensPerSecond }]);
  }

  async function loadEvents() {
    const list = await getJson(`${paths.job(namespace, name)}/events`, { signal });
    replace(events, eventsTable(list.items || []));
  }

  async function loadLog() {
    const path = withQuery(`${paths.job(namespace, name)}/workers/${worker.value || 0}/log`, {
      tail: tail.value || 200,
    });
    try {
      logBox.textContent = await getText(path, { signal });
      logBox.dataset.worker = worker.value || "0";
      if (followLog.checked) logBox.scrollTop = logBox.scrollHeight;
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        logBox.textContent = `(no log yet: ${error.detail})`;
      } else throw error;
    }
  }

  // Refreshes triggered by the watch, coalesced: one in flight, at most one every REFRESH_MS.
  let last = 0;
  let timer = null;
  let running = false;
  function refreshSoon() {
    if (timer || signal.aborted) return;
    const wait = Math.max(0, last + REFRESH_MS - Date.now());
    timer = setTimeout(async () => {
      timer = null;
      if (running || signal.aborted) return;
      running = true;
      last = Date.now();
      try {
        await Promise.all([loadSeries(), loadEvents(), followLog.checked ? loadLog() : null]);
      } catch (error) {
        // A refresh that meets the job gone (the watch's DELETED may come first or after)
        // says so; it never covers the deleted notice with its 404.
        if (signal.aborted || deleted) return;
        if (error instanceof ApiError && error.status === 404) showGone();
        else replace(notice, errorBox(error, { id: "refresh-error" }));
      } finally {
        running = false;
      }
    }, wait);
  }
  signal.addEventListener("abort", () => clearTimeout(timer));

  for (const control of [worker, tail]) control.addEventListener("change", () => loadLog().catch(fail));
  refreshLog.addEventListener("click", () => loadLog().catch(fail));
  followLog.addEventListener("change", () => followLog.checked && loadLog().catch(fail));

  draw();
  await Promise.all([loadSeries(), loadEvents(), loadLog()]);
  last = Date.now();

  follow(paths.watchJob(namespace, name), {
    signal,
    onEvent: ({ type, object }) => {
      if (type === "DELETED") {
        deleted = true;
        job = object;
        draw();
        replace(
          notice,
          h(
            "p",
            { id: "deleted", class: "warning" },
            "This job has been deleted. ",
            h("a", { href: link.history(namespace, { name }) }, "Find it in the history"),
          ),
        );
        return;
      }
      job = object;
      draw();
      refreshSoon();
    },
    onState: (state, error) => {
      live.dataset.state = state;
      if (state === "ended" && error?.status === 404 && !deleted) showGone();
      live.textContent = state === "live" ? "live" : state;
    },
  });
}

export function drawSummary(dl, job) {
  const progress = progressOf(job);
  const restarts = restartsOf(job);
  const p = job.status?.progress || {};
  const goodput = job.status?.goodput;
  const facts = [
    ["Queue", queueOf(job) || "—", "queue"],
    ["Why pending", whyPending(job) || "—", "why"],
    [
      "Progress",
      h(
        "span",
        {},
        progress.fraction === null ? null : h("progress", { max: 1, value: progress.fraction.toFixed(4) }),
        " ",
        h("span", { id: "progress-text" }, progress.text),
      ),
      "progress",
    ],
    ["Loss", formatNumber(p.loss, 4) || "—", "loss"],
    ["Tokens/s", formatNumber(p.tokensPerSecond, 4) || "—", "tps"],
    [
      "Restarts",
      `${restarts.total} (application ${restarts.application}, infrastructure ${restarts.infrastructure}, preemption ${restarts.preemption})`,
      "restarts",
    ],
    ["Workers", workersText(job.status?.workers), "workers"],
    ["Created", formatTime(job.metadata?.creationTimestamp), "created"],
    ["Started", formatTime(job.status?.startTime) || "—", "started"],
    ["Finished", formatTime(job.status?.completionTime) || "—", "finished"],
    [
      "Goodput",
      goodput && goodput.allocated
        ? `${formatNumber((100 * goodput.productive) / goodput.allocated, 3)}% of ${formatNumber(goodput.allocated, 4)} GPU·s`
        : "—",
      "goodput",
    ],
  ];
  dl.replaceChildren(
    ...facts.flatMap(([term, value, id]) => [h("dt", {}, term), h("dd", { id: `fact-${id}` }, value)]),
  );
}

function workersText(workers) {
  if (!workers) return "—";
  return `${workers.ready || 0} ready of ${workers.total || 0} (${workers.succeeded || 0} succeeded, ${workers.failed || 0} failed)`;
}

export function conditionsTable(job) {
  const rows = conditionsOverTime(job).map((c) =>
    h(
      "tr",
      { dataset: { type: c.type } },
      h("td", {}, formatTime(c.lastTransitionTime)),
      h("td", {}, c.type),
      h("td", {}, c.status),
      h("td", {}, c.reason || ""),
      h("td", {}, c.message || ""),
    ),
  );
  return rows.length
    ? table(["Since", "Type", "Status", "Reason", "Message"], rows)
    : h("p", { class: "muted" }, "no conditions yet");
}

export function eventsTable(items) {
  const rows = items.map((e) =>
    h(
      "tr",
      { class: e.type === "Warning" ? "warning" : null },
      h("td", {}, formatTime(e.time)),
      h("td", {}, e.type),
      h("td", {}, e.reason),
      h("td", {}, e.message),
    ),
  );
  return rows.length
    ? table(["Time", "Type", "Reason", "Message"], rows, { id: "events-table" })
    : h("p", { class: "muted" }, "no events yet");
}

function checkpointFacts(job) {
  const last = job.status?.lastCheckpoint;
  const damaged = job.status?.damagedCheckpoints || [];
  const rows = [];
  if (last) {
    rows.push(
      h(
        "tr",
        { dataset: { kind: "latest" } },
        h("td", {}, "latest"),
        h("td", {}, String(last.step)),
        h("td", {}, last.uri),
        h("td", {}, formatTime(last.time)),
      ),
    );
  }
  for (const d of damaged) {
    rows.push(
      h(
        "tr",
        { class: "warning", dataset: { kind: "damaged" } },
        h("td", {}, `damaged: ${d.reason || "unreadable"}`),
        h("td", {}, String(d.step)),
        h("td", {}, d.uri),
        h("td", {}, d.file || ""),
      ),
    );
  }
  const every = job.spec?.checkpoint?.intervalSteps;
  return [
    every ? h("p", { class: "muted" }, `saved every ${every} steps`) : null,
    rows.length
      ? table(["", "Step", "URI", "Time"], rows, { id: "checkpoints-table" })
      : h("p", { class: "muted" }, "no checkpoint yet"),
  ];
}
