// One run: the record (GET /runs/{id}), the loss and learning-rate history (GET /runs/{id}/metrics), then
// its live event stream (SSE; EventSource resumes with Last-Event-ID after a drop). Points are kept by step,
// so a replayed event only rewrites what it already said. window.mtRun exposes the chart data for tests.
(function () {
  "use strict";
  const { api, el, number, duration, age, bytes, statusBadge, problemText, TERMINAL } = window.MT;
  const runId = document.body.dataset.item;
  const base = "/runs/" + encodeURIComponent(runId);
  const train = new Map(); // step -> RunProgress
  const val = new Map(); // step -> EvalPoint
  const logKeys = new Set();
  let record = null;
  let live = null;
  let drawPending = false;
  const $ = (id) => document.getElementById(id);

  const lossChart = window.MT.chart($("loss-chart"), {
    xLabel: "step",
    series: [
      { label: "train loss", axisLabel: "nats/token" },
      { label: "val loss", points: true },
    ],
  });
  const lrChart = window.MT.chart($("lr-chart"), { xLabel: "step", series: [{ label: "learning rate", format: (v) => (v === 0 ? "0" : v.toExponential(1)) }] });

  function draw() {
    drawPending = false;
    const steps = [...new Set([...train.keys(), ...val.keys()])].sort((a, b) => a - b);
    const trainSteps = [...train.keys()].sort((a, b) => a - b);
    lossChart.setData([
      steps,
      steps.map((step) => (train.has(step) ? train.get(step).train_loss : null)),
      steps.map((step) => (val.has(step) ? val.get(step).val_loss : null)),
    ]);
    lrChart.setData([trainSteps, trainSteps.map((step) => train.get(step).learning_rate)]);
  }

  function schedule() {
    if (!drawPending) {
      drawPending = true;
      requestAnimationFrame(draw);
    }
  }

  function showProgress(progress) {
    if (!progress) return;
    $("bar").max = progress.max_steps;
    $("bar").value = progress.step;
    $("step").textContent = progress.step + " / " + progress.max_steps;
    $("eta").textContent = record && TERMINAL.has(record.status) ? "—" : duration(progress.eta_seconds);
    $("elapsed").textContent = duration(progress.elapsed_seconds);
    $("tokens-seen").textContent = number(progress.tokens_seen, 0);
    $("tps").textContent = number(progress.tokens_per_second, 0);
    $("train-loss").textContent = number(progress.train_loss);
  }

  function showEval(point) {
    if (!point) return;
    $("val-loss").textContent = number(point.val_loss);
    $("val-bpb").textContent = number(point.val_bits_per_byte);
  }

  function showRecord(run) {
    record = run;
    $("status").replaceChildren(statusBadge(run.status));
    const request = run.request;
    $("summary").replaceChildren(
      request.model + ": n_layer " + request.n_layer + ", n_head " + request.n_head + ", n_embd " + request.n_embd + ", block_size " + request.block_size,
      " · tokenizer ",
      el("a", { href: "/ui/tokenizers/" + request.tokenizer_id, text: request.tokenizer_id }),
      " · corpus " + request.corpus_path + " · created " + age(run.created_at),
    );
    showProgress(run.progress);
    showEval(run.last_eval);
    $("heartbeat").textContent = run.heartbeat_at && !TERMINAL.has(run.status) ? age(run.heartbeat_at) : "—";
    $("error").textContent = run.error ? run.error.code + ": " + run.error.message : "";
    $("cancel").hidden = !["queued", "running", "stalled"].includes(run.status);
    $("resume-box").hidden = !["failed", "cancelled"].includes(run.status);
    $("evaluate-box").hidden = run.status !== "succeeded";
    const config = Object.entries(request).map(([name, value]) =>
      el("tr", {}, el("th", { scope: "row", className: "mono", text: name }), el("td", { className: "mono", text: JSON.stringify(value) })),
    );
    $("config").replaceChildren(...config);
    if (run.metrics) {
      const m = run.metrics;
      const rows = [
        ["val_loss (nats/token)", number(m.val_loss)],
        ["val_perplexity", number(m.val_perplexity)],
        ["val_bits_per_byte", number(m.val_bits_per_byte)],
        ["train_loss", number(m.train_loss)],
        ["steps", number(m.steps, 0)],
        ["tokens_seen", number(m.tokens_seen, 0)],
        ["n_params", number(m.n_params, 0)],
        ["training_seconds", number(m.training_seconds, 1)],
      ];
      $("metrics").replaceChildren(
        el("tbody", {}, ...rows.map(([name, value]) => el("tr", {}, el("th", { scope: "row", text: name }), el("td", { className: "num", text: value })))),
      );
    }
  }

  async function loadRecord() {
    const result = await api(base);
    if (result.ok) showRecord(result.data);
    else $("error").textContent = problemText(result);
    return result.ok;
  }

  function checkpointChoices(checkpoints) {
    for (const select of document.querySelectorAll(".checkpoint-choice")) {
      const chosen = select.value;
      select.replaceChildren(
        el("option", { value: "", text: "final" }),
        ...checkpoints.map((c) => el("option", { value: c.step, text: "checkpoint " + c.step })),
      );
      select.value = chosen;
    }
  }

  async function exportCheckpoint(step) {
    $("action-result").textContent = "exporting step " + step + "…";
    const result = await api(base + "/export", { method: "POST", body: { checkpoint: step } });
    if (!result.ok) {
      $("action-result").textContent = problemText(result);
      return;
    }
    $("action-result").textContent = "exported step " + result.data.step;
    $("exported").hidden = false;
    $("exported-title").textContent = "Exported files of step " + result.data.step + " (" + result.data.directory + ")";
    const prefix = "export/step-" + result.data.step + "/";
    $("exported-files").replaceChildren(
      ...result.data.files.map((file) => {
        const link = el("a", { href: "#", text: file.path + " (" + bytes(file.size) + ")" });
        link.addEventListener("click", (event) => {
          event.preventDefault();
          download(prefix + file.path);
        });
        return el("li", {}, link);
      }),
    );
  }

  // Downloads go through fetch so that the key travels in the Authorization header, never in a URL.
  async function download(path) {
    const url = "/artifacts/models/" + encodeURIComponent(runId) + "/download?path=" + encodeURIComponent(path);
    const headers = window.MT.key() ? { Authorization: "Bearer " + window.MT.key() } : {};
    const response = await fetch(url, { headers });
    if (!response.ok) {
      $("action-result").textContent = "download failed: HTTP " + response.status;
      return;
    }
    const link = el("a", { href: URL.createObjectURL(await response.blob()), download: path.split("/").pop() });
    document.body.append(link);
    link.click();
    link.remove();
  }

  async function loadCheckpoints() {
    const result = await api(base + "/checkpoints");
    if (!result.ok) return;
    const checkpoints = result.data;
    checkpointChoices(checkpoints);
    const last = checkpoints.length ? checkpoints[checkpoints.length - 1].step : null;
    $("checkpoints").querySelector("tbody").replaceChildren(
      ...checkpoints.map((c) => {
        const exportButton = el("button", { type: "button", className: "write-only", text: "Export" });
        exportButton.addEventListener("click", () => exportCheckpoint(c.step));
        const useButton = el("button", { type: "button", className: "write-only", text: "Generate with it" });
        useButton.addEventListener("click", () => {
          $("gen-checkpoint").value = String(c.step);
          $("prompt").focus();
        });
        return el(
          "tr",
          {},
          el("td", { className: "num", text: c.step }),
          el("td", { className: "num", text: bytes(c.size_bytes) }),
          el("td", { text: age(c.created_at) }),
          el("td", { className: "num", text: number(c.train_loss) }),
          el("td", { className: "num", text: number(c.val_loss) }),
          el(
            "td",
            {},
            exportButton,
            " ",
            useButton,
            " ",
            // A new run from this checkpoint's weights (init_from), on the same or another corpus.
            el("a", { href: "/ui/launch?from=" + encodeURIComponent(runId) + "&checkpoint=" + c.step, className: "write-only", text: "New run from it" }),
            c.step === last ? el("span", { className: "muted", text: " resume continues here" }) : null,
          ),
        );
      }),
    );
    if (!checkpoints.length) {
      $("checkpoints").querySelector("tbody").append(el("tr", {}, el("td", { colspan: 6, className: "muted", text: "None yet." })));
    }
  }

  async function loadEvals() {
    const result = await api(base + "/evals");
    if (!result.ok) return;
    const rows = result.data.map((job) => {
      const r = job.result;
      return el(
        "tr",
        {},
        el("td", { className: "mono", text: job.id }),
        el("td", {}, statusBadge(job.status)),
        el("td", { text: job.request.split + (job.request.corpus_path ? " " + job.request.corpus_path : "") }),
        el("td", { text: job.request.checkpoint === null ? "final" : "checkpoint " + job.request.checkpoint }),
        el("td", { className: "num", text: number(r ? r.loss : null) }),
        el("td", { className: "num", text: number(r ? r.perplexity : null) }),
        el("td", { className: "num", text: number(r ? r.bits_per_byte : null) }),
        el("td", { className: "num", text: number(r ? r.tokens : null, 0) }),
      );
    });
    $("evals").querySelector("tbody").replaceChildren(...rows);
    if (!rows.length) $("evals").querySelector("tbody").append(el("tr", {}, el("td", { colspan: 8, className: "muted", text: "None." })));
    if (result.data.some((job) => !TERMINAL.has(job.status))) setTimeout(loadEvals, 2000);
  }

  function appendLog(event) {
    const key = event.ts + "|" + event.event + "|" + event.message;
    if (logKeys.has(key)) return;
    logKeys.add(key);
    const box = $("log");
    const stick = box.scrollTop + box.clientHeight >= box.scrollHeight - 8;
    box.append(el("div", { className: "log-" + event.level, text: event.ts.slice(11, 23) + " " + event.level.padEnd(7) + " " + event.message }));
    while (box.childElementCount > 300) box.firstElementChild.remove();
    if (stick) box.scrollTop = box.scrollHeight;
  }

  async function loadHistory() {
    const [series, logs] = await Promise.all([api(base + "/metrics"), api(base + "/logs?tail=300")]);
    if (series.ok) {
      for (const progress of series.data.train) train.set(progress.step, progress);
      for (const point of series.data.val) val.set(point.step, point);
      draw();
    }
    if (logs.ok) {
      for (const line of logs.data.lines) if (line.kind === "log" || line.kind === "status") appendLog(line);
    }
  }

  function follow() {
    live = window.MT.stream(base + "/logs/stream", 1000, {
      open: () => {
        $("live").textContent = "live";
      },
      error: (state) => {
        $("live").textContent = state.source.readyState === EventSource.CLOSED ? "ended" : "reconnecting";
      },
      progress: (event) => {
        train.set(event.progress.step, event.progress);
        showProgress(event.progress);
        schedule();
      },
      validation: (event) => {
        val.set(event.point.step, event.point);
        showEval(event.point);
        schedule();
      },
      checkpoint: () => loadCheckpoints(),
      log: (event) => appendLog(event),
      status: async (event) => {
        appendLog(event);
        if (TERMINAL.has(event.status)) {
          live.source.close();
          $("live").textContent = "ended";
          await loadRecord();
          loadCheckpoints();
          loadEvals();
        } else {
          loadRecord();
        }
      },
    });
  }

  // The heartbeat's age, and a status the stream does not carry (stalled), from the record now and then.
  function refresh() {
    if (record && !TERMINAL.has(record.status)) loadRecord();
    setTimeout(refresh, 5000);
  }

  async function act(path, body, label) {
    $("action-result").textContent = label + "…";
    const result = await api(base + path, { method: "POST", body });
    $("action-result").textContent = result.ok ? label + ": done" : problemText(result);
    if (result.ok) {
      await loadRecord();
      if (path === "/resume" && (!live || live.source.readyState === EventSource.CLOSED)) follow();
      if (path === "/evaluate") loadEvals();
    }
  }

  $("cancel").addEventListener("click", () => act("/cancel", undefined, "cancel"));
  $("resume").addEventListener("click", () => {
    const steps = $("resume-steps").value.trim();
    act("/resume", steps ? { max_steps: Number(steps) } : {}, "resume");
  });
  $("evaluate").addEventListener("click", () => {
    const checkpoint = $("eval-checkpoint").value;
    act("/evaluate", { split: $("eval-split").value, checkpoint: checkpoint === "" ? null : Number(checkpoint) }, "evaluate");
  });
  $("generate-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const checkpoint = $("gen-checkpoint").value;
    $("generate-error").textContent = "";
    $("samples").textContent = "generating…";
    const result = await api(base + "/generate", {
      method: "POST",
      body: {
        prompt: $("prompt").value,
        max_new_tokens: Number($("max-new-tokens").value),
        temperature: Number($("temperature").value),
        top_k: Number($("top-k").value),
        checkpoint: checkpoint === "" ? null : Number(checkpoint),
      },
    });
    if (!result.ok) {
      $("samples").textContent = "";
      $("generate-error").textContent = problemText(result);
      return;
    }
    $("samples").textContent = result.data.samples.map((sample) => $("prompt").value + sample.text).join("\n\n———\n\n");
  });

  window.mtRun = {
    trainSteps: () => [...train.keys()].sort((a, b) => a - b),
    valSteps: () => [...val.keys()].sort((a, b) => a - b),
    chartPoints: () => lossChart.data()[0].length,
    chartData: () => lossChart.data(), // [steps, train loss or null, val loss or null], as drawn
    opens: () => (live ? live.opens : 0),
    streamed: () => (live ? live.events : 0), // events that came through the live stream
    lastEventId: () => (live ? live.lastId : ""),
  };

  window.MT.ready.then(async () => {
    if (!(await loadRecord())) return;
    await loadHistory();
    follow();
    loadCheckpoints();
    loadEvals();
    setTimeout(refresh, 5000);
  });
})();
