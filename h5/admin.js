/* The admin pages' few behaviours (no inline scripts or handlers: the CSP allows none). */
(function () {
  "use strict";
  // A form with data-confirm asks before it is sent (revoking a key cannot be undone).
  document.addEventListener("submit", function (event) {
    var message = event.target.dataset && event.target.dataset.confirm;
    if (message && !window.confirm(message)) { event.preventDefault(); }
  });
})();
