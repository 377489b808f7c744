// What the console shows of a job: pure functions of the job's JSON as the API serves it.

export const FINISHED = new Set(["Succeeded", "Failed"]);

export function isFinished(job) {
  return FINISHED.has(job?.status?.phase);
}

export function phaseOf(job) {
  return job?.status?.phase || "Pending";
}

// The queue a job waits in: its LocalQueue, or the ClusterQueue admission names.
export function queueOf(job) {
  const queueing = job?.status?.queueing || {};
  return (
    job?.spec?.queue ||
    queueing.localQueue ||
    queueing.clusterQueue ||
    queueing.admission?.clusterQueue ||
    ""
  );
}

// Why a job is not running yet: the Admitted condition when it is False, else the queue's
// own reason; "" for a job that holds its quota or has finished.
export function whyPending(job) {
  if (isFinished(job)) return "";
  const status = job?.status || {};
  const admitted = (status.conditions || []).find((c) => c.type === "Admitted");
  if (admitted && admitted.status === "False") {
    return joinReason(admitted.reason, admitted.message);
  }
  const queueing = status.queueing;
  if (queueing && queueing.reason && queueing.reason !== "QuotaReserved" && !queueing.admission) {
    const where = queueing.position ? ` (position ${queueing.position})` : "";
    return joinReason(queueing.reason, queueing.message) + where;
  }
  return "";
}

function joinReason(reason, message) {
  if (reason && message) return `${reason}: ${message}`;
  return reason || message || "";
}

// { step, total, fraction (0..1 or null), text }
export function progressOf(job) {
  const progress = job?.status?.progress || {};
  const step = Number(progress.step || 0);
  const total = Number(progress.totalSteps || 0);
  const fraction = total > 0 ? Math.min(1, step / total) : null;
  return { step, total, fraction, text: total > 0 ? `${step} / ${total}` : String(step) };
}

export function restartsOf(job) {
  const status = job?.status || {};
  const by = status.restartsByReason || {};
  return {
    total: Number(status.restarts || 0),
    application: Number(by.application || 0),
    infrastructure: Number(by.infrastructure || 0),
    preemption: Number(by.preemption || 0),
  };
}

// Conditions of the job and of its queueing, oldest transition first.
export function conditionsOverTime(job) {
  const status = job?.status || {};
  const all = [...(status.conditions || []), ...(status.queueing?.conditions || [])];
  return all
    .map((c) => ({ ...c, at: Date.parse(c.lastTransitionTime || "") || 0 }))
    .sort((a, b) => a.at - b.at || String(a.type).localeCompare(String(b.type)));
}

// The facts a row of the jobs table shows; two jobs with equal keys render alike.
export function rowFacts(job) {
  const restarts = restartsOf(job);
  return {
    name: job?.metadata?.name || "",
    phase: phaseOf(job),
    suspended: Boolean(job?.spec?.suspend),
    queue: queueOf(job),
    why: whyPending(job),
    progress: progressOf(job).text,
    fraction: progressOf(job).fraction,
    restarts: restarts.total,
    created: job?.metadata?.creationTimestamp || "",
  };
}

export function rowKey(facts) {
  return JSON.stringify(facts);
}

export function formatNumber(value, digits = 3) {
  if (value === null || value === undefined || value === "") return "";
  const n = Number(value);
  if (!Number.isFinite(n)) return String(value);
  if (Number.isInteger(n)) return n.toLocaleString("en-US");
  return n.toPrecision(digits);
}

// A queue's resource amount in a reader's unit: memory in GiB, the rest as counted.
export function formatQuantity(resource, value) {
  if (resource === "memory" && Number.isFinite(Number(value))) {
    return `${(Number(value) / 2 ** 30).toFixed(1)} GiB`;
  }
  return formatNumber(value);
}

export function formatTime(value) {
  if (!value) return "";
  const ms = typeof value === "number" ? value * 1000 : Date.parse(value);
  if (!Number.isFinite(ms)) return String(value);
  return new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

// A series as uPlot wants it, [xs, ys], from API points: {time, value} or [x, y] pairs.
export function toColumns(points) {
  const xs = [];
  const ys = [];
  for (const point of points || []) {
    const [x, y] = Array.isArray(point) ? point : [point.time, point.value];
    if (x === null || x === undefined || !Number.isFinite(Number(x))) continue;
    xs.push(Number(x));
    ys.push(y === null || y === undefined ? null : Number(y));
  }
  return [xs, ys];
}

// Where a sorted-by-name list gets `name` (the index of the first entry that sorts after it).
export function insertionIndex(names, name) {
  let lo = 0;
  let hi = names.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (names[mid] <= name) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
