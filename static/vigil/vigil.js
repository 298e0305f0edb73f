// Vigil's only script besides htmx. No inline script anywhere: the CSP forbids it.
(function () {
  "use strict";

  // Controls that only matter without JS (a filter form's "Apply" button) hide behind this class.
  document.documentElement.classList.add("js");

  // The "Everything" chip of a filter form is current while no box of the form is checked.
  function syncFilterReset(form) {
    var reset = form.querySelector("[data-filter-reset]");
    if (!reset) {
      return;
    }
    if (form.querySelector("input[type=checkbox]:checked")) {
      reset.removeAttribute("aria-current");
    } else {
      reset.setAttribute("aria-current", "true");
    }
  }

  // Filter forms submit themselves when a select or a checkbox changes.
  document.addEventListener("change", function (event) {
    var form = event.target.closest("form[data-autosubmit]");
    if (form) {
      syncFilterReset(form);
      form.requestSubmit();
    }
  });

  // "Everything" is a link (it works without JS); with htmx it swaps the list only, so the
  // form's boxes are cleared here to match.
  document.addEventListener("click", function (event) {
    var reset = event.target.closest("[data-filter-reset]");
    var form = reset && reset.closest("form");
    if (form) {
      form.querySelectorAll("input[type=checkbox]:checked").forEach(function (box) {
        box.checked = false;
      });
      syncFilterReset(form);
    }
  });

  // A permalinked timeline event (?event=<id>) is scrolled into view even when the URL has no
  // #fragment (a link pasted without it, or a login redirect that dropped it).
  document.addEventListener("DOMContentLoaded", function () {
    var highlighted = document.querySelector(".event.highlighted");
    if (highlighted) {
      highlighted.scrollIntoView({block: "center"});
    }
  });
})();
