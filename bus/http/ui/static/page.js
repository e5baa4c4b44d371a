// Times: the page says them in UTC (<time datetime="…Z">); here, in the browser's
// zone, with the UTC text kept as the title (shown on hover). A static file: the
// page's Content-Security-Policy forbids inline script.
(function () {
  "use strict";
  function localise(root) {
    root.querySelectorAll("time[datetime]:not([data-local])").forEach(function (el) {
      var when = new Date(el.getAttribute("datetime"));
      if (isNaN(when.getTime())) { return; }
      el.title = el.textContent;
      el.textContent = when.toLocaleString(undefined, {
        year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit",
        timeZoneName: "short"
      });
      el.setAttribute("data-local", "");
    });
  }
  document.addEventListener("DOMContentLoaded", function () { localise(document); });
  // htmx swaps (boosted navigation, live rows): localise what arrived.
  document.addEventListener("htmx:load", function (e) { localise(e.target.parentNode || document); });
  // The live list says whether it is connected (and tests wait on this, not on time).
  document.addEventListener("htmx:sseOpen", function (e) { e.target.setAttribute("data-live", "open"); });
  document.addEventListener("htmx:sseError", function (e) { e.target.setAttribute("data-live", "reconnecting"); });
})();
