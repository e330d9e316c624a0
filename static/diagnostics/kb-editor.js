/* The article editor in the admin (diagnostics/admin/stepforms.py): show the arguments of the
   step kind chosen, offer only that kind's facts, and reorder checks and fixes with buttons
   instead of typed positions. Loaded as a static file: the pages allow no inline script. */
(function () {
  "use strict";

  function formOf(el) {
    return el.closest(".inline-related") || document;
  }

  function showKind(select) {
    var slot = select.dataset.stepSlot;
    var form = formOf(select);
    form.querySelectorAll("fieldset.step-args.slot-" + slot).forEach(function (fs) {
      var other = !fs.classList.contains("kind-" + select.value);
      fs.hidden = other;
      // Only the chosen kind's fields are posted (the server reads no other).
      fs.querySelectorAll("input, select, textarea").forEach(function (control) {
        control.disabled = other;
      });
    });
    if (slot === "c") {
      form.querySelectorAll("select.fact optgroup").forEach(function (group) {
        var other = group.dataset.kind !== select.value;
        group.hidden = other;
        group.disabled = other;
      });
    }
  }

  function renumber(group) {
    group.querySelectorAll(".inline-related:not(.empty-form)").forEach(function (item, i) {
      var input = item.querySelector("input.position");
      if (input) input.value = String(i);
    });
  }

  function move(item, up) {
    var sibling = up ? item.previousElementSibling : item.nextElementSibling;
    while (sibling && !sibling.matches(".inline-related:not(.empty-form)")) {
      sibling = up ? sibling.previousElementSibling : sibling.nextElementSibling;
    }
    if (!sibling) return;
    item.parentNode.insertBefore(item, up ? sibling : sibling.nextElementSibling);
    renumber(item.closest(".inline-group"));
    item.querySelector(".reorder button").focus();
  }

  function addReorderButtons(item) {
    var labels = document.getElementById("kb-editor-labels");
    if (!labels || !item.querySelector("input.position") || item.querySelector(".reorder")) return;
    var bar = document.createElement("span");
    bar.className = "reorder";
    [["up", "↑"], ["down", "↓"]].forEach(function (pair) {
      var button = document.createElement("button");
      button.type = "button";
      button.textContent = pair[1];
      button.title = labels.dataset[pair[0]];
      button.setAttribute("aria-label", button.title);
      button.dataset.move = pair[0];
      bar.appendChild(button);
    });
    var heading = item.querySelector("h3");
    if (heading) heading.appendChild(bar);
  }

  function prepare(root) {
    root.querySelectorAll("select[data-step-slot]").forEach(showKind);
    root.querySelectorAll(".inline-related:not(.empty-form)").forEach(addReorderButtons);
  }

  document.addEventListener("change", function (event) {
    if (event.target.matches("select[data-step-slot]")) showKind(event.target);
  });
  document.addEventListener("click", function (event) {
    var button = event.target.closest(".reorder button");
    if (!button) return;
    event.preventDefault();
    move(button.closest(".inline-related"), button.dataset.move === "up");
  });
  document.addEventListener("formset:added", function (event) {
    prepare(event.target);
    var group = event.target.closest(".inline-group");
    if (group) renumber(group);
  });
  document.addEventListener("DOMContentLoaded", function () {
    prepare(document);
  });
})();
