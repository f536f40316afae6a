// Cistern dashboard: progressive enhancement only. Every page works without this file.
(function () {
  "use strict";

  // Refresh regions marked data-refresh="<url>" every 15 s while the tab is visible.
  document.querySelectorAll("[data-refresh]").forEach(function (el) {
    var url = el.getAttribute("data-refresh");
    var note = document.getElementById(el.id + "-updated");
    setInterval(function () {
      if (document.hidden) return;
      fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
        .then(function (r) {
          if (!r.ok || r.redirected) throw new Error("status " + r.status);
          return r.text();
        })
        .then(function (html) {
          el.innerHTML = html;
          if (note) note.textContent = "Updated " + new Date().toLocaleTimeString();
        })
        .catch(function () {
          if (note) note.textContent = "Could not refresh; reload the page.";
        });
    }, 15000);
  });

  // Sortable tables: header links sort in place (their href sorts on the server without JS).
  function key(cell, numeric) {
    var v = cell ? (cell.getAttribute("data-value") || cell.textContent.trim()) : "";
    if (!numeric) return v.toLowerCase();
    var n = parseFloat(v);
    return isNaN(n) ? null : n;
  }
  document.querySelectorAll("table[data-sortable]").forEach(function (table) {
    var heads = table.querySelectorAll("th[data-sort]");
    heads.forEach(function (th) {
      var link = th.querySelector("a.sort");
      if (!link) return;
      link.addEventListener("click", function (ev) {
        ev.preventDefault();
        var col = Array.prototype.indexOf.call(th.parentNode.children, th);
        var numeric = th.getAttribute("data-sort") === "num";
        var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = key(a.cells[col], numeric), y = key(b.cells[col], numeric);
          if (x === y) return 0;
          if (x === null || x === "") return 1; // empty values last either way
          if (y === null || y === "") return -1;
          return (x < y ? -1 : 1) * dir;
        });
        rows.forEach(function (r) { body.appendChild(r); });
        heads.forEach(function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
        history.replaceState(null, "", link.getAttribute("href"));
      });
    });
  });
})();
