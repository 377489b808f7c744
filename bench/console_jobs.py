"""The console's jobs page with 1,000 jobs: time to first rows and to the full list.

Method: a store-only local backend (no worker processes) holding `--jobs` jobs in one
namespace is served by uvicorn in its own process, as in bench/rest_latency.py. Headless
Chromium (Debian's, driven by Selenium) loads /console/#/jobs/bench with the token already in
the tab's sessionStorage, from about:blank each time, so every run loads the HTML and the ES
modules again. The page marks two moments with the User Timing API, read after it is done:
`carina:jobs:first-page` (the first page of the list, 50 jobs, is in the table) and
`carina:jobs:complete` (every job is), both from the navigation's start. Neither waits for a
paint: they are when the rows are in the document. The browser's resource timings of the
page's list calls split the first figure into loading the page and drawing rows.

The baseline, in the same browser tab and the same run, alternating with the page runs: the
REST list calls alone, made with `fetch` and parsed with `.json()` from a loaded console
page, timed with performance.now(): the first page (limit=50, the console's first call), the
whole list paged as the console pages it (50, then 500 at a time), and the whole list in one
call (limit=1000). Their difference to the page's figures is what the console adds: loading
its files, building rows, and the login check.

    .venv/bin/python bench/console_jobs.py [--jobs 1000] [--runs 7] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rest_latency import TOKEN, fill, serve, wait_ready

NAMESPACE = "bench"

BASELINE = """
const done = arguments[arguments.length - 1];
const base = "/api/v1/namespaces/bench/trainingjobs";
const headers = { Authorization: "Bearer " + sessionStorage.getItem("carina.token") };
async function page(limit, cont) {
  const query = new URLSearchParams({ limit: String(limit) });
  if (cont) query.set("continue", cont);
  const r = await fetch(base + "?" + query, { headers, cache: "no-store" });
  return r.json();
}
(async () => {
  const t0 = performance.now();
  const first = await page(50, "");
  const firstMs = performance.now() - t0;
  const t1 = performance.now();
  let got = 0, cont = "", limit = 50;
  do {
    const p = await page(limit, cont);
    got += p.items.length;
    cont = p.metadata.continue || "";
    limit = 500;
  } while (cont);
  const pagedMs = performance.now() - t1;
  const t2 = performance.now();
  const all = await page(1000, "");
  const oneMs = performance.now() - t2;
  done({ firstMs, pagedMs, oneMs, first: first.items.length, paged: got, one: all.items.length });
})().catch((e) => done({ error: String(e) }));
"""

MARKS = """
const mark = (name) => performance.getEntriesByName(name)[0]?.startTime ?? null;
const calls = performance.getEntriesByType("resource").filter(
  (e) => e.name.includes("/trainingjobs?limit="));
return {
  first: mark("carina:jobs:first-page"),
  complete: mark("carina:jobs:complete"),
  firstCallStart: calls[0]?.startTime ?? null,
  firstCallEnd: calls[0]?.responseEnd ?? null,
  lastCallEnd: calls[calls.length - 1]?.responseEnd ?? null,
  rows: document.querySelectorAll("#jobs-table tbody tr").length,
};
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def browser() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.add_argument("--window-size=1400,1000")
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def console_run(driver: Any, url: str, jobs: int) -> dict[str, float]:
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get("about:blank")
    driver.get(f"{url}/console/#/jobs/{NAMESPACE}")
    WebDriverWait(driver, 120, poll_frequency=0.05).until(
        lambda d: d.execute_script(MARKS)["complete"] is not None
    )
    marks: dict[str, Any] = driver.execute_script(MARKS)
    assert marks["rows"] == jobs, marks
    keys = ("first", "complete", "firstCallStart", "firstCallEnd", "lastCallEnd")
    return {key: float(marks[key]) for key in keys}


def baseline_run(driver: Any) -> dict[str, float]:
    result: dict[str, Any] = driver.execute_async_script(BASELINE)
    assert "error" not in result, result
    return {k: float(result[k]) for k in ("firstMs", "pagedMs", "oneMs")}


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    return f"{statistics.median(ordered):,.0f} (min {ordered[0]:,.0f}, max {ordered[-1]:,.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="carina-console-bench-") as tmp:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = serve(Path(tmp), port)
        driver = None
        try:
            asyncio.run(wait_ready(url))
            started = time.monotonic()
            asyncio.run(fill(url, args.jobs))
            print(f"stored {args.jobs} jobs in {time.monotonic() - started:.1f}s", flush=True)
            driver = browser()
            driver.get(f"{url}/console/")
            driver.execute_script(
                "sessionStorage.setItem('carina.token', arguments[0]);"
                "sessionStorage.setItem('carina.namespace', arguments[1]);",
                TOKEN,
                NAMESPACE,
            )
            console_run(driver, url, args.jobs)  # warm-up: caches, the server's first pages
            baseline_run(driver)
            page: list[dict[str, float]] = []
            rest: list[dict[str, float]] = []
            for _ in range(args.runs):
                page.append(console_run(driver, url, args.jobs))
                rest.append(baseline_run(driver))
            version = driver.capabilities.get("browserVersion", "?")
        finally:
            if driver is not None:
                driver.quit()
            server.terminate()
            server.wait(timeout=30)

    load = os.getloadavg()
    first = [p["first"] for p in page]
    complete = [p["complete"] for p in page]
    rest_first = [r["firstMs"] for r in rest]
    rest_paged = [r["pagedMs"] for r in rest]
    rest_one = [r["oneMs"] for r in rest]
    print(
        f"\n{args.jobs} jobs, {args.runs} runs each, alternating; Chromium {version}; "
        f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}; "
        f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
    )
    print("\n| what | median ms (min, max) |\n|---|---|")
    print(f"| console: first 50 rows in the table (from navigation) | {summary(first)} |")
    print(f"| REST alone: first page, limit=50 (fetch + json) | {summary(rest_first)} |")
    print(
        "| console: its first list call sent (HTML, CSS, modules loaded) | "
        f"{summary([p['firstCallStart'] for p in page])} |"
    )
    print(
        "| console: first 50 rows drawn after their call answered | "
        f"{summary([p['first'] - p['firstCallEnd'] for p in page])} |"
    )
    print(f"| console: all {args.jobs} rows in the table (from navigation) | {summary(complete)} |")
    print(
        "| console: rows drawn after the last list call answered | "
        f"{summary([p['complete'] - p['lastCallEnd'] for p in page])} |"
    )
    print(f"| REST alone: every page, 50 then 500 at a time | {summary(rest_paged)} |")
    print(f"| REST alone: one call, limit=1000 | {summary(rest_one)} |")
    ratio_first = statistics.median(first) / statistics.median(rest_first)
    ratio_all = statistics.median(complete) / statistics.median(rest_paged)
    print(
        f"\nratios of medians: first rows / first page {ratio_first:.1f}x; "
        f"full list / the same pages alone {ratio_all:.2f}x"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {"jobs": args.jobs, "page": page, "rest": rest, "load": load, "chromium": version},
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
