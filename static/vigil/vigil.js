// Vigil's only script besides htmx. No inline script anywhere: the CSP forbids it.
(function () {
  "use strict";

  // Filter forms submit themselves when a select changes.
  document.addEventListener("change", function (event) {
    var form = event.target.closest("form[data-autosubmit]");
    if (form) {
      form.requestSubmit();
    }
  });

  // A permalinked timeline event (?event=<id>) is scrolled into view even after a login redirect,
  // which drops the #fragment.
  document.addEventListener("DOMContentLoaded", function () {
    var highlighted = document.querySelector(".event.highlighted");
    if (highlighted) {
      highlighted.scrollIntoView({block: "center"});
    }
  });
})();
