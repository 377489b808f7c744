// One job of the history: what it was asked to do, how it ended, its curves and last logs.

import { ApiError, getJson, paths } from "../api.js";
import { h, pretty, replace, section, table } from "../dom.js";
import { formatNumber, formatTime } from "../describe.js";
import { lineChart } from "../charts.js";
import { link } from "../routes.js";
import { conditionsTable, eventsTable } from "./job.js";

export async function render(main, { namespace, uid }, { signal }) {
  let record;
  try {
    record = await getJson(paths.record(namespace, uid), { signal });
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      main.append(
        section(
          "History",
          h("p", { id: "history-unavailable" }, `Not in the history (404 ${error.reason}: ${error.detail}).`),
          h("a", { href: link.history(namespace) }, "Back to the history"),
        ),
      );
      return;
    }
    throw error;
  }
  const facts = [
    ["Phase", record.phase],
    ["Reason", [record.reason, record.message].filter(Boolean).join(": ") || "—"],
    ["Queue", record.queue || "—"],
    ["Labels", Object.entries(record.labels || {}).map(([k, v]) => `${k}=${v}`).join(", ") || "—"],
    ["Created", formatTime(record.createdAt)],
    ["Started", formatTime(record.startedAt) || "—"],
    ["Finished", formatTime(record.finishedAt) || "—"],
    ["Deleted", formatTime(record.deletedAt) || "—"],
    ["Restarts", String(record.restarts ?? 0)],
    ["Final step", String(record.finalStep ?? "—")],
    ["Final loss", formatNumber(record.finalLoss, 4) || "—"],
  ];
  main.append(
    h(
      "section",
      { class: "panel", id: "record", dataset: { uid } },
      h("h2", {}, `${record.name} `, h("span", { class: `badge phase-${record.phase}` }, record.phase)),
      h("p", {}, h("a", { href: link.history(namespace) }, "← history")),
      h("dl", { class: "facts" }, facts.flatMap(([t, v]) => [h("dt", {}, t), h("dd", {}, v)])),
    ),
  );
  const metrics = record.metrics || {};
  const charts = h("div", { class: "charts" });
  main.append(section("Loss and throughput", charts));
  lineChart(charts, {
    title: "Loss",
    xLabel: "step",
    yLabel: "loss",
    time: false,
    series: [
      { label: "train", points: metrics.loss },
      { label: "eval", points: metrics.evalLoss },
    ].filter((s) => (s.points || []).length),
  });
  if (Array.isArray(metrics.tokensPerSecond)) {
    lineChart(charts, {
      title: "Tokens per second",
      xLabel: "step",
      yLabel: "tokens/s",
      time: false,
      series: [{ label: "tokens/s", points: metrics.tokensPerSecond }],
    });
  } else if (metrics.tokensPerSecond !== undefined && metrics.tokensPerSecond !== null) {
    charts.append(h("p", {}, `Tokens per second: ${formatNumber(metrics.tokensPerSecond, 4)}`));
  }
  if (metrics.goodput !== undefined && metrics.goodput !== null) {
    charts.append(h("div", { id: "goodput" }, h("h3", {}, "Goodput"), goodputView(metrics.goodput)));
  }
  main.append(section("Conditions", conditionsTable({ status: { conditions: record.conditions || [] } })));
  main.append(section("Events", eventsTable(record.events || [])));
  const logs = h("div", { id: "record-logs" });
  for (const [index, text] of Object.entries(record.logs || {})) {
    logs.append(h("h3", {}, `Worker ${index}`), h("pre", { class: "log", dataset: { worker: index } }, text));
  }
  if (!logs.childElementCount) replace(logs, h("p", { class: "muted" }, "no logs kept"));
  main.append(section("Last log lines", logs));
  main.append(section("Spec", pretty(record.spec)), section("Final status", pretty(record.status)));
}

function goodputView(goodput) {
  if (typeof goodput !== "object") return h("p", {}, formatNumber(goodput, 4));
  return table(
    ["", "GPU·s"],
    Object.entries(goodput).map(([k, v]) => h("tr", {}, h("td", {}, k), h("td", {}, formatNumber(v, 4)))),
  );
}
