// The console's entry: the header, the router over the URL's fragment, one page at a time.

import { ApiError, session } from "./api.js";
import { h, replace, errorBox } from "./dom.js";
import { link, parseRoute } from "./routes.js";

// Pages are loaded when first shown: the jobs page does not wait for the chart library.
const PAGES = {
  login: () => import("./pages/login.js"),
  jobs: () => import("./pages/jobs.js"),
  job: () => import("./pages/job.js"),
  queues: () => import("./pages/queues.js"),
  history: () => import("./pages/history.js"),
  record: () => import("./pages/record.js"),
};

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const logoutButton = document.getElementById("logout");
let current = null; // the AbortController of the page on screen

logoutButton.addEventListener("click", () => {
  session.logOut();
  if (location.hash === link.login()) show();
  else location.hash = link.login();
});
window.addEventListener("hashchange", show);
// A page left for another keeps its connections while the browser holds it for "back"
// (the back/forward cache): close its watch stream, or six such pages would take every
// connection the browser allows this server, and open it again on return.
window.addEventListener("pagehide", () => current?.abort());
window.addEventListener("pageshow", (event) => event.persisted && show());
show();

function show() {
  current?.abort();
  current = new AbortController();
  const signal = current.signal;
  let { page, params } = parseRoute(location.hash);
  const loggedIn = Boolean(session.token());
  if (!loggedIn && page !== "login") {
    params = { next: location.hash };
    page = "login";
  }
  if (params.namespace) session.setNamespace(params.namespace);
  drawNav(loggedIn && page !== "login", page);
  main.replaceChildren();
  main.dataset.page = page;
  const ctx = { signal, fail: (error) => fail(error, signal) };
  PAGES[page]()
    .then((module) => (signal.aborted ? null : module.render(main, params, ctx)))
    .catch(ctx.fail);
}

function drawNav(visible, page) {
  nav.hidden = !visible;
  logoutButton.hidden = !visible;
  if (!visible) return;
  const ns = session.namespace();
  const item = (name, href, label) =>
    h("a", { href, class: page === name ? "current" : null, id: `nav-${name}` }, label);
  replace(
    nav,
    item("jobs", link.jobs(ns), "Jobs"),
    item("queues", link.queues(ns), "Queues"),
    item("history", link.history(ns), "History"),
    h("span", { class: "namespace", title: "namespace" }, ns),
  );
}

// An error from a page: a refused token ends the session (back to the login page with the
// API's words); anything else is shown where the page would be, and nothing of the page.
function fail(error, signal) {
  if (signal.aborted || error?.name === "AbortError") return;
  if (error instanceof ApiError && error.status === 401) {
    session.logOut();
    window.history.replaceState(null, "", link.login());
    main.replaceChildren();
    PAGES.login().then((login) => login.render(main, { error }, { signal }));
    drawNav(false, "login");
    return;
  }
  replace(main, errorBox(error, { id: "page-error" }));
}
