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
