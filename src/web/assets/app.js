// postdesk web inbox: progressive enhancement only; every page works without it.
// - Live: listens to /events (server-sent events) and, when the store's
//   activity changes, re-fetches the page and swaps its #live region.
// - Reply preview: shows the typed text above the signature as it is typed.
(function () {
  "use strict";
  var live = document.getElementById("live");
  // Refreshes may overlap; only the latest started one is applied, so a
  // slow older answer never puts back a state that has moved on.
  var started = 0;
  function refresh() {
    var mine = ++started;
    fetch(location.href, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (text) {
        if (!text || mine !== started) { return; }
        var doc = new DOMParser().parseFromString(text, "text/html");
        var fresh = doc.getElementById("live");
        if (fresh && live) { live.replaceWith(fresh); live = fresh; }
        var counts = doc.getElementById("views");
        var old = document.getElementById("views");
        if (counts && old) { old.replaceWith(counts); }
      });
  }
  if (live && window.EventSource) {
    var version = live.getAttribute("data-version");
    var events = new EventSource("/events");
    events.addEventListener("activity", function (e) {
      if (e.data !== version) { version = e.data; refresh(); }
    });
  }
  var text = document.getElementById("reply-text");
  var preview = document.getElementById("preview-text");
  if (text && preview) {
    var show = function () { preview.textContent = text.value; };
    text.addEventListener("input", show);
    show();
  }
})();
