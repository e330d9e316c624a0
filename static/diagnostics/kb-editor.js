/* The article editor in the admin (diagnostics/admin/stepforms.py): show the arguments of the
   step kind chosen, offer only that kind's facts, and reorder checks and fixes with buttons
   instead of typed positions. Loaded as a static file: the pages allow no inline script. */
(function () {
  "use strict";

  function formOf(el) {
    return el.closest(".inline-related") || document;
  }

  function labels() {
    return document.getElementById("kb-editor-labels");
  }

  // A kind's argument fieldset, cloned from the inline's empty form where the page did not
  // render it (the server renders the chosen kind's only).
  function ensureFieldset(form, slot, kind) {
    var selector = "fieldset.step-args.slot-" + slot + ".kind-" + kind;
    if (form === document || form.querySelector(selector)) return;
    var group = form.closest(".inline-group");
    var empty = group && group.querySelector(".empty-form " + selector);
    var index = form.id.split("-").pop();
    if (!empty || !/^\d+$/.test(index)) return;
    var copy = empty.cloneNode(true);
    copy.querySelectorAll("[name], [id], [for]").forEach(function (el) {
      ["name", "id", "for"].forEach(function (attr) {
        var value = el.getAttribute(attr);
        if (value) el.setAttribute(attr, value.replace(/__prefix__/g, index));
      });
    });
    var siblings = form.querySelectorAll("fieldset.step-args.slot-" + slot);
    var after = siblings.length ? siblings[siblings.length - 1]
      : form.querySelector("select[data-step-slot='" + slot + "']").closest("fieldset");
    after.parentNode.insertBefore(copy, after.nextSibling);
  }

  function offerFacts(form, kind) {
    var data = labels() && labels().dataset.facts;
    if (!data || form === document) return;
    var facts = JSON.parse(data)[kind] || [];
    form.querySelectorAll("select.fact").forEach(function (select) {
      var current = select.value;
      while (select.options.length > 1) select.remove(1);
      facts.forEach(function (fact) {
        select.add(new Option(fact, fact, false, fact === current));
      });
    });
  }

  function showKind(select, changed) {
    var slot = select.dataset.stepSlot;
    var form = formOf(select);
    if (select.value) ensureFieldset(form, slot, select.value);
    form.querySelectorAll("fieldset.step-args.slot-" + slot).forEach(function (fs) {
      var other = !fs.classList.contains("kind-" + select.value);
      fs.hidden = other;
      // Only the chosen kind's fields are posted (the server reads no other).
      fs.querySelectorAll("input, select, textarea").forEach(function (control) {
        control.disabled = other;
      });
    });
    if (slot === "c" && changed) offerFacts(form, select.value);
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
    var names = labels();
    if (!names || !item.querySelector("input.position") || item.querySelector(".reorder")) return;
    var bar = document.createElement("span");
    bar.className = "reorder";
    [["up", "↑"], ["down", "↓"]].forEach(function (pair) {
      var button = document.createElement("button");
      button.type = "button";
      button.textContent = pair[1];
      button.title = names.dataset[pair[0]];
      button.setAttribute("aria-label", button.title);
      button.dataset.move = pair[0];
      bar.appendChild(button);
    });
    var heading = item.querySelector("h3");
    if (heading) heading.appendChild(bar);
  }

  function prepare(root) {
    root.querySelectorAll(".inline-related:not(.empty-form) select[data-step-slot]").forEach(
      function (select) { showKind(select, false); });
    root.querySelectorAll(".inline-related:not(.empty-form)").forEach(addReorderButtons);
  }

  document.addEventListener("change", function (event) {
    if (event.target.matches("select[data-step-slot]")) showKind(event.target, true);
  });
  document.addEventListener("click", function (event) {
    var button = event.target.closest(".reorder button");
    if (!button) return;
    event.preventDefault();
    move(button.closest(".inline-related"), button.dataset.move === "up");
  });
  document.addEventListener("formset:added", function (event) {
    event.target.querySelectorAll("select[data-step-slot]").forEach(function (select) {
      showKind(select, true);
    });
    addReorderButtons(event.target);
    var group = event.target.closest(".inline-group");
    if (group) renumber(group);
  });
  document.addEventListener("DOMContentLoaded", function () {
    prepare(document);
  });
})();
