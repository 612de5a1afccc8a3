// appfence console: the live parts. Every page works without this file; with it, the
// regions a page marks are replaced as the server pushes new versions of them.
(function () {
  "use strict";
  var root = document.querySelector("[data-live]");
  if (!root || !window.EventSource) return;
  var status = document.querySelector("[data-live-status]");
  var say = function (text) { if (status) status.textContent = text; };
  var source = new EventSource(root.getAttribute("data-live"));
  source.addEventListener("open", function () { say("Live: updates as they happen"); });
  source.addEventListener("replace", function (event) {
    var regions = JSON.parse(event.data);
    Object.keys(regions).forEach(function (id) {
      var target = document.getElementById(id);
      if (target) target.innerHTML = regions[id];
    });
    document.body.setAttribute("data-live-updates",
      String(Number(document.body.getAttribute("data-live-updates") || "0") + 1));
  });
  source.addEventListener("error", function () {
    // The browser reconnects by itself while the stream can be had; a refused one
    // (signed out, expired) stays closed.
    say(source.readyState === EventSource.CLOSED ? "Not live: reload the page" : "Reconnecting…");
  });
})();
