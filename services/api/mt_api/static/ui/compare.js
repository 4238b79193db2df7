// Compare: the validation curves of the chosen runs (?run=a&run=b) on one chart by step and one by tokens
// seen, from GET /runs/{id}/metrics, and the differences of their requests and final metrics in a table.
(function () {
  "use strict";
  const { api, el, number } = window.MT;
  const chosen = new Set(new URLSearchParams(location.search).getAll("run"));
  const loaded = new Map(); // run id -> {run, series}
  const metric = document.getElementById("metric");
  const allFields = document.getElementById("all-fields");
  let charts = null;

  function makeCharts(ids) {
    const axisLabel = metric.value === "val_loss" ? "val loss (nats/token)" : "val bits/byte";
    const series = ids.map((id) => ({ label: id, axisLabel, points: true }));
    for (const name of ["by-step", "by-tokens"]) document.getElementById(name).textContent = "";
    charts = {
      ids: ids.join(","),
      metric: metric.value,
      step: window.MT.chart(document.getElementById("by-step"), { xLabel: "step", series }),
      tokens: window.MT.chart(document.getElementById("by-tokens"), { xLabel: "tokens seen", series }),
    };
  }

  // uPlot wants one x array: every run's x values, with null where a run has no point.
  function aligned(curves) {
    const xs = [...new Set(curves.flatMap((curve) => curve.map(([x]) => x)))].sort((a, b) => a - b);
    return [xs, ...curves.map((curve) => {
      const byX = new Map(curve);
      return xs.map((x) => (byX.has(x) ? byX.get(x) : null));
    })];
  }

  // Tokens seen at a validation point, as the point records them (every process of the run, so a run resumed
  // at another world size is placed right). Points written before they recorded it: the progress report of the
  // same step, else step × the request's tokens per step (over all nnodes × nproc_per_node processes).
  function tokensAt(entry, point) {
    if (point.tokens_seen !== null && point.tokens_seen !== undefined) return point.tokens_seen;
    const progress = entry.series.train.find((p) => p.step === point.step);
    if (progress) return progress.tokens_seen;
    const r = entry.run.request;
    const worldSize = (r.nnodes || 1) * (r.nproc_per_node || 1);
    return point.step * r.batch_size * r.block_size * r.gradient_accumulation_steps * worldSize;
  }

  // Each {run, series} entry's curve of the metric named key, as [x, value] pairs: by step and by tokens seen.
  function curves(entries, key) {
    const kept = entries.map((entry) => entry.series.val.filter((p) => p[key] !== null && p[key] !== undefined));
    return {
      step: kept.map((points) => points.map((p) => [p.step, p[key]])),
      tokens: kept.map((points, i) => points.map((p) => [tokensAt(entries[i], p), p[key]])),
    };
  }

  function draw() {
    const ids = [...chosen].filter((id) => loaded.has(id));
    if (!charts || charts.ids !== ids.join(",") || charts.metric !== metric.value) makeCharts(ids);
    const drawn = curves(ids.map((id) => loaded.get(id)), metric.value);
    charts.step.setData(aligned(drawn.step));
    charts.tokens.setData(aligned(drawn.tokens));
    table(ids);
  }

  function table(ids) {
    const head = document.querySelector("#diff thead");
    const body = document.querySelector("#diff tbody");
    head.replaceChildren(el("tr", {}, el("th", { scope: "col", text: "field" }), ...ids.map((id) => el("th", { scope: "col" }, el("a", { href: "/ui/runs/" + id, text: id })))));
    const runs = ids.map((id) => loaded.get(id).run);
    const rows = [];
    const metrics = ["val_bits_per_byte", "val_loss", "val_perplexity", "n_params", "tokens_seen", "training_seconds"];
    rows.push(["status", runs.map((run) => run.status), true]);
    for (const name of metrics) rows.push([name, runs.map((run) => (run.metrics ? number(run.metrics[name]) : "—")), true]);
    const fields = [...new Set(runs.flatMap((run) => Object.keys(run.request)))];
    for (const name of fields) {
      const values = runs.map((run) => JSON.stringify(run.request[name]));
      const differs = new Set(values).size > 1;
      if (differs || allFields.checked) rows.push([name, values, false, differs]);
    }
    body.replaceChildren(
      ...rows.map(([name, values, isMetric, differs]) =>
        el(
          "tr",
          { "data-field": name, "data-differs": differs ? "true" : null },
          el("th", { scope: "row", className: "mono", text: name + (differs && allFields.checked ? " (differs)" : "") }),
          ...values.map((value) => el("td", { className: isMetric ? "num" : "mono", text: value })),
        ),
      ),
    );
  }

  async function load(id) {
    if (loaded.has(id)) return;
    const [run, series] = await Promise.all([api("/runs/" + id), api("/runs/" + id + "/metrics")]);
    if (run.ok && series.ok) loaded.set(id, { run: run.data, series: series.data });
  }

  async function update() {
    const query = new URLSearchParams();
    for (const id of chosen) query.append("run", id);
    history.replaceState(null, "", "?" + query.toString());
    await Promise.all([...chosen].map(load));
    draw();
  }

  async function choices() {
    const result = await api("/runs?limit=100");
    if (!result.ok) return;
    const ids = result.data.items.map((run) => run.id);
    for (const id of chosen) if (!ids.includes(id)) ids.push(id);
    const boxes = ids.map((id) => {
      const box = el("input", { type: "checkbox", id: "pick-" + id, value: id, checked: chosen.has(id) });
      box.addEventListener("change", () => {
        if (box.checked) chosen.add(id);
        else chosen.delete(id);
        update();
      });
      return el("label", { for: "pick-" + id }, box, " ", id);
    });
    document.getElementById("choices").replaceChildren(...boxes);
  }

  metric.addEventListener("change", draw);
  allFields.addEventListener("change", draw);
  window.mtCompare = {
    series: () => (charts ? charts.step.data() : null),
    tokens: () => (charts ? charts.tokens.data() : null),
    curves, // the chart's data from given {run, series} entries, for tests
  };
  window.MT.ready.then(async () => {
    await choices();
    await update();
  });
})();
