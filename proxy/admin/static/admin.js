// The ops console's few behaviours that need a script; every page also works without it.
// - Review queue: the keys C, W and S press Correct, Wrong and Skip.
// - Policy simulator: moving the threshold (or changing a cost) re-runs the simulation.
"use strict";

function typingInField(event) {
  var target = event.target;
  return target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement ||
    target instanceof HTMLSelectElement || (target && target.isContentEditable);
}

function reviewKeys() {
  var article = document.querySelector("[data-review]");
  if (!article) return;
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || typingInField(event)) return;
    var control = article.querySelector('[data-key="' + event.key.toLowerCase() + '"]');
    if (!control) return;
    event.preventDefault();
    control.click();
  });
}

function simulatorControls() {
  var form = document.querySelector("form[data-autosubmit]");
  if (!form) return;
  var slider = form.querySelector("#threshold");
  var shown = form.querySelector("#threshold-value");
  var costs = form.querySelectorAll("#wrong_answer_cost, #abstain_cost");
  // An untouched slider sends no threshold: the configured policy (or the costs) decide it.
  if (slider.dataset.unset === "true") slider.name = "";
  slider.addEventListener("input", function () {
    shown.value = Number(slider.value).toFixed(2);
    slider.name = "threshold";
  });
  slider.addEventListener("change", function () { form.requestSubmit(); });
  costs.forEach(function (input) {
    input.addEventListener("change", function () {
      slider.name = "";  // new costs: the threshold follows from them
      form.requestSubmit();
    });
  });
  form.querySelectorAll("select").forEach(function (select) {
    select.addEventListener("change", function () { form.requestSubmit(); });
  });
}

document.addEventListener("DOMContentLoaded", function () {
  reviewKeys();
  simulatorControls();
});
