// "show why for all": opens (or closes) every result's "why" panel.
(function () {
  const button = document.getElementById("toggle-why");
  if (!button) return;
  button.addEventListener("click", function () {
    const panels = document.querySelectorAll("details.why");
    const open = !Array.from(panels).every((panel) => panel.open);
    panels.forEach((panel) => { panel.open = open; });
    button.textContent = open ? "hide why" : "show why for all";
  });
})();
