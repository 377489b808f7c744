// Charts drawn by uPlot (vendored under ../vendor/uplot/, see VENDORED.txt there).

import uPlot from "../vendor/uplot/uPlot.esm.js";
import { h } from "./dom.js";
import { toColumns } from "./describe.js";

const COLORS = ["#1f6feb", "#d1242f", "#1a7f37", "#9a6700"];

// A line chart in `holder` of one or more series [{label, points}] sharing an x axis
// (epoch seconds when `time`, else steps). Returns {update(series)} to redraw in place.
export function lineChart(holder, { title, xLabel, yLabel, time = true, series }) {
  const box = h("div", { class: "chart", dataset: { chart: title } });
  holder.append(box);
  let plot = null;

  function update(next) {
    const tables = next.map((s) => toColumns(s.points));
    const points = tables.reduce((sum, [xs]) => sum + xs.length, 0);
    box.dataset.points = String(points);
    if (points === 0) {
      plot?.destroy();
      plot = null;
      box.replaceChildren(h("p", { class: "muted" }, `${title}: no points yet`));
      return;
    }
    const data = tables.length === 1 ? tables[0] : uPlot.join(tables);
    if (plot && plot.series.length === data.length) {
      plot.setData(data);
      return;
    }
    plot?.destroy();
    box.replaceChildren();
    plot = new uPlot(
      {
        title,
        width: Math.max(320, Math.min(box.clientWidth || 560, 720)),
        height: 240,
        scales: { x: { time } },
        axes: [{ label: xLabel }, { label: yLabel }],
        series: [
          { label: xLabel },
          ...next.map((s, i) => ({
            label: s.label,
            stroke: COLORS[i % COLORS.length],
            width: 1.5,
            spanGaps: true,
          })),
        ],
      },
      data,
      box,
    );
  }

  update(series);
  return { update };
}
