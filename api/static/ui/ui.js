// cloudsched review page: a little progressive enhancement. Everything works without it:
// sorting is a server-side link, "why?" a page of its own, the theme follows the system.
(function () {
  "use strict";
  var root = document.documentElement;
  var saved = null;
  try { saved = localStorage.getItem("cloudsched-theme"); } catch (e) { /* storage blocked */ }
  if (saved === "light" || saved === "dark") root.dataset.theme = saved;

  function currentTheme() {
    if (root.dataset.theme) return root.dataset.theme;
    return window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
  }

  function setupTheme() {
    var button = document.querySelector("[data-theme-toggle]");
    if (!button) return;
    button.hidden = false;
    button.addEventListener("click", function () {
      var next = currentTheme() === "dark" ? "light" : "dark";
      root.dataset.theme = next;
      try { localStorage.setItem("cloudsched-theme", next); } catch (e) { /* storage blocked */ }
    });
  }

  // Sort a table by a column on click (the header link sorts on the server without JS).
  function setupSorting() {
    document.querySelectorAll("table.sortable").forEach(function (table) {
      var headers = Array.prototype.slice.call(table.querySelectorAll("thead th"));
      headers.forEach(function (th, index) {
        if (!th.dataset.sortKey) return;
        var link = th.querySelector("a");
        link.addEventListener("click", function (event) {
          event.preventDefault();
          var descending = th.getAttribute("aria-sort") === "ascending";
          headers.forEach(function (h) { h.removeAttribute("aria-sort"); });
          th.setAttribute("aria-sort", descending ? "descending" : "ascending");
          sortBody(table.tBodies[0], index, th.hasAttribute("data-num"), descending);
        });
      });
    });
  }

  function sortBody(body, index, numeric, descending) {
    var rows = Array.prototype.slice.call(body.rows);
    function value(row) {
      var v = row.cells[index].dataset.v || "";
      return numeric ? parseFloat(v) : v;
    }
    rows.sort(function (a, b) {  // ties by job name, ascending either way (as the server sorts)
      var x = value(a), y = value(b);
      var order = x < y ? -1 : x > y ? 1 : 0;
      if (order !== 0) return descending ? -order : order;
      return a.dataset.job < b.dataset.job ? -1 : a.dataset.job > b.dataset.job ? 1 : 0;
    });
    var fragment = document.createDocumentFragment();
    rows.forEach(function (row) { fragment.appendChild(row); });
    body.appendChild(fragment);
  }

  // "why?": load the job's why page and show its #why section in a dialog (a plain link without JS).
  function setupWhy() {
    var dialog = document.getElementById("why-panel");
    if (!dialog || typeof dialog.showModal !== "function") return;
    var body = dialog.querySelector(".panel-body");
    document.addEventListener("click", function (event) {
      var link = event.target.closest ? event.target.closest("a[data-why]") : null;
      if (!link || event.ctrlKey || event.metaKey || event.shiftKey) return;
      event.preventDefault();
      var href = link.getAttribute("href");
      body.textContent = "Loading…";
      if (!dialog.open) dialog.showModal();
      fetch(href, { headers: { Accept: "text/html" }, credentials: "same-origin" })
        .then(function (response) { return response.text(); })
        .then(function (text) {
          var doc = new DOMParser().parseFromString(text, "text/html");
          var part = doc.getElementById("why") || doc.querySelector("main");
          body.replaceChildren(document.importNode(part, true));  // an error page's <main> says what failed
        })
        .catch(function () {
          body.textContent = "Could not load the explanation. ";
          var a = document.createElement("a");
          a.href = href; a.textContent = "Open it as a page";
          body.appendChild(a);
        });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    setupTheme();
    setupSorting();
    setupWhy();
  });
})();
