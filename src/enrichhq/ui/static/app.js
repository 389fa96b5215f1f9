// The UI's few behaviours, here rather than inline so the Content-Security-Policy can forbid inline script.
document.addEventListener("click", (event) => {
  const target = event.target;
  if (!(target instanceof HTMLElement)) return;
  if (target.dataset.selectAll) {
    document.querySelectorAll(target.dataset.selectAll).forEach((box) => { box.checked = target.checked; });
  }
  if (target.dataset.clear) {
    const region = document.getElementById(target.dataset.clear);
    if (region) region.innerHTML = "";
  }
});

// How many companies are ticked, shown in the grid's toolbar ("all matching" counts every match).
function countSelected() {
  const counter = document.getElementById("selected-count");
  if (!counter || !counter.dataset.countOf) return;
  const all = document.getElementById("all-matching");
  const ticked = document.querySelectorAll(`${counter.dataset.countOf}:checked`).length;
  counter.textContent = all instanceof HTMLInputElement && all.checked ? all.dataset.total || "all" : String(ticked);
}
document.addEventListener("change", countSelected);
document.addEventListener("click", () => setTimeout(countSelected, 0));

// A form with data-confirm asks before it is sent (Cancel a batch).
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form instanceof HTMLFormElement && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
  }
});
