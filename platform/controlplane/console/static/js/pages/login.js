// The login page: a token (and a namespace) that the API must accept before it is kept.

import { ApiError, getJson, paths, session, withQuery } from "../api.js";
import { h, errorBox } from "../dom.js";
import { link } from "../routes.js";

export async function render(main, params) {
  const error = h("div", { id: "login-error" });
  if (params.error) error.append(errorBox(loginMessage(params.error)));
  const token = h("input", {
    id: "token",
    type: "password",
    name: "token",
    autocomplete: "off",
    required: true,
    placeholder: "paste the API token",
  });
  const namespace = h("input", {
    id: "namespace",
    name: "namespace",
    value: session.namespace(),
    required: true,
  });
  const button = h("button", { id: "login", type: "submit" }, "Log in");
  const form = h(
    "form",
    { id: "login-form", class: "panel login", autocomplete: "off" },
    h("h2", {}, "Log in"),
    h(
      "p",
      { class: "muted" },
      "Paste a bearer token of this control plane (carina up keeps one in <state>/token). " +
        "It stays in this tab only and is sent as an Authorization header.",
    ),
    h("label", {}, "Token ", token),
    h("label", {}, "Namespace ", namespace),
    button,
    error,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.replaceChildren();
    button.disabled = true;
    const ns = namespace.value.trim();
    const secret = token.value.trim();
    try {
      // The token is kept only once the API has accepted it for this namespace.
      await getJson(withQuery(paths.jobs(ns), { limit: 1 }), { token: secret });
      session.logIn(secret, ns);
      token.value = "";
      const next = params.next && params.next !== link.login() ? params.next : link.jobs(ns);
      if (location.hash === next) window.dispatchEvent(new HashChangeEvent("hashchange"));
      else location.hash = next;
    } catch (failure) {
      error.replaceChildren(errorBox(loginMessage(failure)));
    } finally {
      button.disabled = false;
    }
  });
  main.append(form);
  token.focus();
}

function loginMessage(error) {
  if (error instanceof ApiError && error.status === 401) {
    return `The API refused this token (401 ${error.reason}: ${error.detail})`;
  }
  if (error instanceof ApiError && error.status === 403) {
    return `This token may not read that namespace (403 ${error.reason}: ${error.detail})`;
  }
  return `Could not log in: ${error?.message || error}`;
}
