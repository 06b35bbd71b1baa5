// The operator console's queue page (docs/dashboard.md#queues): refreshes the queue
// table, the workers and the chart every 5 seconds without reloading the page. Without
// JavaScript the page has a "Refresh" link and shows the same.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live || !window.fetch || !window.DOMParser) return;
  var status = document.getElementById("live-status");
  function refresh() {
    fetch(window.location.href, { credentials: "same-origin", headers: { accept: "text/html" } })
      .then(function (res) {
        if (!res.ok) throw new Error(String(res.status));
        return res.text();
      })
      .then(function (html) {
        var next = new DOMParser().parseFromString(html, "text/html").getElementById("live");
        if (next) live.innerHTML = next.innerHTML;
        if (status) status.textContent = "Refreshed every 5 seconds.";
      })
      .catch(function () {
        if (status) status.textContent = "Could not refresh; reload the page.";
      })
      .then(function () {
        window.setTimeout(refresh, 5000);
      });
  }
  window.setTimeout(refresh, 5000);
})();
