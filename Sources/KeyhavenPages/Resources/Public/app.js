// Keyhaven: refreshes integrations that are being verified, and stops when none is; copy buttons; the token of an
// invitation link. Everything else works without this script.
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

  // Copy buttons: <button data-copy="input-id" data-copied="label">.
  function setUpCopyButtons() {
    Array.prototype.forEach.call(document.querySelectorAll("button[data-copy]"), function (button) {
      button.addEventListener("click", function () {
        var field = document.getElementById(button.getAttribute("data-copy"));
        if (!field) { return; }
        field.select();
        var done = function () { button.textContent = button.getAttribute("data-copied") || button.textContent; };
        if (navigator.clipboard && navigator.clipboard.writeText) {
          navigator.clipboard.writeText(field.value).then(done, function () { document.execCommand("copy"); done(); });
        } else {
          document.execCommand("copy");
          done();
        }
      });
    });
  }

  // An invitation link carries its token in the fragment, which never reaches a server. The accept page puts it
  // in the form, and keeps it in this tab while the reader signs in first.
  function setUpInvitation() {
    var field = document.getElementById("invitation-token");
    if (!field) { return; }
    var fromLink = window.location.hash.slice(1);
    if (fromLink.indexOf("kh_inv_") === 0) {
      window.sessionStorage.setItem("keyhaven_invitation", fromLink);
      window.history.replaceState(null, "", window.location.pathname);
    }
    var kept = window.sessionStorage.getItem("keyhaven_invitation");
    if (kept && !field.value) { field.value = kept; }
    var form = document.getElementById("accept-invitation");
    if (form) {
      form.addEventListener("submit", function () { window.sessionStorage.removeItem("keyhaven_invitation"); });
    }
  }

  // The new-integration page's provider search: hides the providers (and groups) whose names do not match. Without
  // script every provider shows.
  function setUpProviderSearch() {
    var section = document.querySelector("[data-provider-search]");
    var field = document.getElementById("provider-search");
    if (!section || !field) { return; }
    var none = section.querySelector("[data-no-providers]");
    field.addEventListener("input", function () {
      var words = field.value.toLowerCase().split(/\s+/).filter(function (word) { return word.length > 0; });
      var shown = 0;
      section.querySelectorAll(".provider-group").forEach(function (group) {
        var inGroup = 0;
        group.querySelectorAll("li[data-terms]").forEach(function (item) {
          var terms = item.getAttribute("data-terms");
          var match = words.every(function (word) { return terms.indexOf(word) >= 0; });
          item.hidden = !match;
          if (match) { inGroup += 1; }
        });
        group.hidden = inGroup === 0;
        shown += inGroup;
      });
      if (none) { none.hidden = shown > 0; }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    setUpCopyButtons();
    setUpInvitation();
    setUpProviderSearch();
    if (verifying().length > 0) { window.setTimeout(tick, INTERVAL_MS); }
  });
})();
