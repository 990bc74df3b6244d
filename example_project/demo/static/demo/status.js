// The reindex button without a page load, then polling the status JSON until the run ends.
(function () {
  const form = document.getElementById("reindex-form");
  const statusUrl = JSON.parse(document.getElementById("status-url").textContent);
  const button = document.getElementById("reindex-button");
  let timer = null;

  function text(element, value) { if (element) element.textContent = value; }

  function render(data) {
    text(document.getElementById("status-ms"), data.status_ms);
    data.rows.forEach(function (row) {
      const tr = document.querySelector(
        'tr[data-model="' + row.model + '"][data-embedder="' + row.embedder + '"]');
      if (!tr) return;
      tr.querySelectorAll("td[data-field]").forEach(function (td) {
        const value = row[td.dataset.field];
        text(td, value);
        td.classList.toggle("bad", ["failed", "missing", "stale", "orphaned"].includes(td.dataset.field) && value > 0);
      });
    });
    data.models.forEach(function (model) {
      const box = document.querySelector('.model-progress[data-model="' + model.label + '"]');
      if (!box) return;
      ["done", "objects", "pending", "missing", "failed"].forEach(function (key) {
        text(box.querySelector("." + key), model[key]);
      });
      box.querySelector(".progress > div").style.width =
        (model.objects ? 100 * model.done / model.objects : 100) + "%";
    });
    const run = data.run;
    if (!run) return;
    const state = document.getElementById("run-state");
    const label = run.error ? "failed" : run.running ? "running" : "finished";
    const css = run.error ? "state-error" : run.running ? "state-running" : "state-done";
    state.innerHTML = "";
    const p = document.createElement("p");
    p.append("Last run" + (run.force ? " (forced)" : "") + ": ");
    const span = document.createElement("span");
    span.id = "run-label"; span.className = css; span.textContent = label;
    p.append(span, " after ");
    const seconds = document.createElement("span");
    seconds.id = "run-seconds"; seconds.textContent = run.seconds;
    p.append(seconds, " s");
    const log = document.createElement("pre");
    log.id = "run-log";
    log.textContent = run.lines.join("\n") + (run.error ? "\n" + run.error : "");
    state.append(p, log);
    button.disabled = run.running;
    if (!run.running && timer) { clearInterval(timer); timer = null; }
  }

  function poll() {
    fetch(statusUrl, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then((response) => response.json()).then(render)
      .catch(function () { /* the next poll tries again */ });
  }

  function startPolling() { if (!timer) timer = setInterval(poll, 1000); poll(); }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    button.disabled = true;
    fetch(form.action, {
      method: "POST", body: new FormData(form), credentials: "same-origin",
      headers: { Accept: "application/json" },
    }).then((response) => response.json()).then(startPolling)
      .catch(function () { button.disabled = false; });
  });

  const label = document.getElementById("run-label");
  if (label && label.textContent === "running") startPolling();
})();
