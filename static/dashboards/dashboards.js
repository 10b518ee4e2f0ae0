// Dashboards: refresh the panels every few seconds without a reload.
// The server renders the panels (SVG charts included); this only swaps them in.
(function () {
  "use strict";
  var panels = document.getElementById("panels");
  if (!panels || !window.fetch) return;
  var seconds = Math.max(5, parseInt(panels.getAttribute("data-poll"), 10) || 5);
  var busy = false;

  function url() {
    var params = new URLSearchParams(window.location.search);
    params.set("fragment", "1");
    return window.location.pathname + "?" + params.toString();
  }

  function refresh() {
    if (busy || document.hidden) return;
    busy = true;
    fetch(url(), { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) {
        if (response.status === 403 || response.redirected) { window.location.reload(); return null; }
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        if (html === null || html === undefined) return;
        // Keep keyboard focus where it was when the focused link still exists after the swap.
        var focused = document.activeElement && panels.contains(document.activeElement) ? document.activeElement.getAttribute("href") : null;
        panels.innerHTML = html;
        panels.setAttribute("data-updated", String(Date.now()));
        if (focused) {
          var again = panels.querySelector('a[href="' + CSS.escape(focused) + '"]');
          if (again) again.focus();
        }
      })
      .catch(function () { /* offline for a moment: the next poll tries again */ })
      .then(function () { busy = false; });
  }

  window.setInterval(refresh, seconds * 1000);
  document.addEventListener("visibilitychange", function () { if (!document.hidden) refresh(); });
})();
