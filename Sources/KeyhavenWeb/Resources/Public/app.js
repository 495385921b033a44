// Keyhaven: refreshes integrations that are being verified, and stops when none is. Everything else works
// without this script.
(function () {
  "use strict";
  var INTERVAL_MS = 1500;
  var GIVE_UP_MS = 3 * 60 * 1000;
  var started = Date.now();

  function verifying() {
    return Array.prototype.slice.call(document.querySelectorAll('[data-status="verifying"][data-id]'));
  }

  function refreshCard(card) {
    var id = card.getAttribute("data-id");
    return fetch("/api/integrations/" + encodeURIComponent(id), { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (integration) {
        if (!integration || integration.status === "verifying") { return; }
        if (card.id === "detail-status") { window.location.reload(); return; }
        return fetch("/integrations/" + encodeURIComponent(id) + "/card", { credentials: "same-origin" })
          .then(function (response) { return response.ok ? response.text() : null; })
          .then(function (html) {
            if (!html) { return; }
            var holder = document.createElement("template");
            holder.innerHTML = html.trim();
            var fresh = holder.content.firstElementChild;
            if (fresh && card.parentNode) { card.parentNode.replaceChild(fresh, card); }
          });
      })
      .catch(function () { /* the next round tries again */ });
  }

  function tick() {
    var cards = verifying();
    if (cards.length === 0 || Date.now() - started > GIVE_UP_MS) { return; }
    Promise.all(cards.map(refreshCard)).then(function () { window.setTimeout(tick, INTERVAL_MS); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (verifying().length > 0) { window.setTimeout(tick, INTERVAL_MS); }
  });
})();
