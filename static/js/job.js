// The job page: when the verdict (or a button the employee must press next) arrives live, bring
// it into view. On a phone it would otherwise sit above or below where the reader was following
// the steps (issue #11). The SSE extension announces each swap with htmx:sseMessage.
document.addEventListener("htmx:sseMessage", (event) => {
  const box = event.target;
  if (!box || box.id !== "job-verdict") return;
  requestAnimationFrame(() => {
    if (!box.querySelector("h2")) return;
    const still = window.matchMedia("(prefers-reduced-motion: reduce)").matches;
    box.scrollIntoView({ block: "start", behavior: still ? "auto" : "smooth" });
  });
});
