// The job page: when the verdict (or a button the employee must press next) arrives live, bring
// it into view. On a phone it would otherwise sit below a long list of steps (issue #11).
document.addEventListener("htmx:afterSettle", (event) => {
  const box = event.detail.target;
  if (!box || box.id !== "job-verdict" || !box.querySelector("h2")) return;
  const still = window.matchMedia("(prefers-reduced-motion: reduce)").matches;
  box.scrollIntoView({ block: "start", behavior: still ? "auto" : "smooth" });
});
