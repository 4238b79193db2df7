// Runs: GET /runs (filtered by status), redrawn every few seconds while any run shown is active.
(function () {
  "use strict";
  const { api, el, number, age, statusBadge, TERMINAL } = window.MT;
  const filter = document.getElementById("status-filter");
  const body = document.querySelector("#runs tbody");
  const updated = document.getElementById("updated");
  const params = new URLSearchParams(location.search);
  filter.value = params.get("status") || "";
  let timer = null;

  function row(run) {
    const progress = run.progress;
    const request = run.request;
    const bar = progress
      ? el("progress", { max: progress.max_steps, value: progress.step, "aria-label": "progress of " + run.id })
      : null;
    const bpb = run.metrics ? run.metrics.val_bits_per_byte : run.last_eval ? run.last_eval.val_bits_per_byte : null;
    return el(
      "tr",
      { "data-run": run.id, "data-status": run.status },
      el("td", {}, el("input", { type: "checkbox", name: "run", value: run.id, "aria-label": "select " + run.id })),
      el("td", {}, el("a", { href: "/ui/runs/" + run.id, text: run.id })),
      el("td", {}, statusBadge(run.status)),
      el("td", {}, bar, " ", progress ? progress.step + " / " + progress.max_steps : "—"),
      el("td", { className: "num", text: number(progress ? progress.train_loss : null) }),
      el("td", { className: "num", text: number(bpb) }),
      el("td", { className: "num", text: number(progress ? progress.tokens_per_second : null, 0) }),
      el("td", { text: "n_layer " + request.n_layer + ", n_embd " + request.n_embd + ", block_size " + request.block_size }),
      el("td", { text: age(run.created_at) }),
    );
  }

  async function load() {
    clearTimeout(timer);
    const query = new URLSearchParams({ limit: "100" });
    if (filter.value) query.set("status", filter.value);
    const result = await api("/runs?" + query.toString());
    if (!result.ok) return;
    const checked = new Set([...body.querySelectorAll("input:checked")].map((box) => box.value));
    body.replaceChildren(...result.data.items.map(row));
    for (const box of body.querySelectorAll("input[type=checkbox]")) box.checked = checked.has(box.value);
    if (!result.data.items.length) body.append(el("tr", {}, el("td", { colspan: 9, className: "muted", text: "No runs." })));
    updated.textContent = "updated " + new Date().toLocaleTimeString();
    const active = result.data.items.some((run) => !TERMINAL.has(run.status));
    timer = setTimeout(load, active ? 2000 : 10000);
  }

  filter.addEventListener("change", () => {
    const next = new URLSearchParams(location.search);
    if (filter.value) next.set("status", filter.value);
    else next.delete("status");
    history.replaceState(null, "", "?" + next.toString());
    load();
  });
  window.MT.ready.then(load);
})();
