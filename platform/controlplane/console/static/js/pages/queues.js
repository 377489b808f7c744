// Queues: every ClusterQueue the token may read, with its usage and its pending jobs in
// order, and the namespace's LocalQueues.

import { ApiError, getJson, paths } from "../api.js";
import { h, section, table } from "../dom.js";
import { formatQuantity, formatTime } from "../describe.js";
import { link } from "../routes.js";

export async function render(main, { namespace }, { signal }) {
  let clusterQueues;
  try {
    clusterQueues = (await getJson(paths.clusterQueues(), { signal })).items || [];
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 403) throw error;
    main.append(section("Queues", h("p", { id: "no-queues" }, `Not visible to this token: ${error.message}`)));
    return;
  }
  if (clusterQueues.length === 0) {
    main.append(section("Queues", h("p", { id: "no-queues", class: "muted" }, "This platform has no queues.")));
    return;
  }
  const details = await Promise.all(
    clusterQueues.map((q) => getJson(paths.clusterQueue(q.name), { signal })),
  );
  for (const queue of details) {
    main.append(
      h(
        "section",
        { class: "panel queue", dataset: { queue: queue.name } },
        h("h2", {}, `ClusterQueue ${queue.name}`),
        h(
          "p",
          { class: "muted" },
          `${queue.strategy}${queue.cohort ? `, cohort ${queue.cohort}` : ""}; ` +
            `${queue.admittedJobs} admitted, ${queue.pendingJobs} pending`,
        ),
        usageTable(queue.resources || []),
        pendingTable(queue.pending || [], namespace),
      ),
    );
  }
  try {
    const local = (await getJson(paths.localQueues(namespace), { signal })).items || [];
    if (local.length) {
      main.append(
        section(
          `LocalQueues in ${namespace}`,
          table(
            ["Name", "ClusterQueue", "Admitted", "Pending", "Stop policy"],
            local.map((q) =>
              h(
                "tr",
                {},
                h("td", {}, q.name),
                h("td", {}, q.clusterQueue),
                h("td", {}, String(q.admittedJobs)),
                h("td", {}, String(q.pendingJobs)),
                h("td", {}, q.stopPolicy),
              ),
            ),
          ),
        ),
      );
    }
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 403) throw error;
  }
}

function usageTable(resources) {
  return table(
    ["Resource", "Reserved", "Nominal", "Borrowed", "Use"],
    resources.map((r) =>
      h(
        "tr",
        { dataset: { resource: r.name } },
        h("td", {}, r.name),
        h("td", {}, formatQuantity(r.name, r.reserved)),
        h("td", {}, formatQuantity(r.name, r.nominal)),
        h("td", {}, formatQuantity(r.name, r.borrowed)),
        h(
          "td",
          {},
          r.nominal > 0 ? h("progress", { max: 1, value: Math.min(1, r.reserved / r.nominal).toFixed(4) }) : "",
        ),
      ),
    ),
    { class: "usage" },
  );
}

function pendingTable(pending, namespace) {
  if (!pending.length) return h("p", { class: "muted" }, "No job waits here.");
  return table(
    ["#", "Job", "Priority", "Reason", "Message", "Estimated start"],
    pending.map((p) =>
      h(
        "tr",
        { dataset: { job: `${p.namespace}/${p.name}` } },
        h("td", {}, p.position ?? ""),
        h(
          "td",
          {},
          p.namespace === namespace ? h("a", { href: link.job(p.namespace, p.name) }, p.name) : `${p.namespace}/${p.name}`,
        ),
        h("td", {}, String(p.priority)),
        h("td", {}, p.reason || ""),
        h("td", {}, p.message || ""),
        h("td", {}, formatTime(p.estimatedStart)),
      ),
    ),
    { class: "pending" },
  );
}
