// Starts GraphiQL on Rollcall's /graphql page. Loaded after graphiql.bundle.js, as a file of its own: the
// page's content security policy runs no inline script.
(function () {
  "use strict";
  var parts = window.RollcallGraphiQL;
  var container = document.getElementById("graphiql");
  var settings = container.dataset;

  // GraphiQL's menus add a <style> element at run time; it carries the nonce the policy allows.
  window.__webpack_nonce__ = settings.styleNonce;

  // A browser signed in to Rollcall sends its session cookie (same origin); such a request must also carry
  // the CSRF header. A bearer token pasted into the Headers tab ({"Authorization": "Bearer rcs_..."}) is
  // sent as it is, and takes precedence over the cookie.
  var defaultHeaders = {};
  defaultHeaders[settings.csrfHeader] = "1";

  var fetcher = parts.createGraphiQLFetcher({
    url: settings.endpoint,
    headers: defaultHeaders,
    enableIncrementalDelivery: false,
  });

  var defaultQuery = [
    "# Rollcall's GraphQL API. Ctrl-Enter runs the query,",
    "# Ctrl-Space completes, and Docs describes every field.",
    "#",
    "# Signed in to Rollcall in this browser, you ask as",
    "# yourself. With a token, open Headers below and paste",
    '# {"Authorization": "Bearer <token>"}',
    "",
    "{",
    "  me {",
    "    username",
    "  }",
    "}",
    "",
  ].join("\n");

  // GraphiQL keeps its tabs (query, variables), its history and its settings in a storage; given none, it
  // uses localStorage, where a password typed into a query or its variables would stay after the page is
  // closed. This one lives in the page alone: a visit starts afresh and leaves nothing behind.
  var kept = new Map();
  var pageStorage = {
    getItem: function (key) {
      return kept.has(String(key)) ? kept.get(String(key)) : null;
    },
    setItem: function (key, value) {
      kept.set(String(key), String(value));
    },
    removeItem: function (key) {
      kept.delete(String(key));
    },
    clear: function () {
      kept.clear();
    },
    key: function (index) {
      return Array.from(kept.keys())[index] ?? null;
    },
    get length() {
      return kept.size;
    },
  };

  parts.createRoot(container).render(
    parts.React.createElement(parts.GraphiQL, {
      fetcher: fetcher,
      defaultQuery: defaultQuery,
      defaultEditorToolsVisibility: true,
      isHeadersEditorEnabled: true,
      storage: pageStorage,
      // A pasted token stays in this tab only, never in any storage.
      shouldPersistHeaders: false,
      inputValueDeprecation: true,
    }),
  );
})();
