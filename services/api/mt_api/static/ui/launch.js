// Launch: the forms the server rendered from the request contracts. Each input's data-kind says how its text
// becomes JSON; an empty optional input is not sent (the server's default applies). A 4xx Problem's field
// errors are shown beside the inputs they name (``betas[1]`` beside ``betas``), the detail below the form.
(function () {
  "use strict";
  const { api, el, problemText } = window.MT;

  function value(input) {
    const text = input.value.trim();
    switch (input.dataset.kind) {
      case "int":
      case "float":
        return text === "" ? undefined : Number(text);
      case "bool":
        return text === "" ? undefined : text === "true";
      case "list":
        return input.value.split("\n").map((line) => line.trim()).filter((line) => line !== "");
      case "pair":
        return text === "" ? undefined : text.split(",").map((part) => Number(part.trim()));
      default:
        return text === "" ? undefined : input.value;
    }
  }

  function clear(form) {
    for (const box of form.querySelectorAll(".field-error")) box.textContent = "";
    for (const input of form.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
  }

  async function submit(event) {
    event.preventDefault();
    const form = event.currentTarget;
    const kind = form.dataset.kind;
    const result = document.getElementById(kind + "-result");
    clear(form);
    const body = {};
    for (const input of form.querySelectorAll("[data-kind]:not(form)")) {
      const parsed = value(input);
      if (parsed === undefined) continue;
      const [outer, inner] = input.name.split(".");  // init_from.run_id, model_options.n_kv_head: a nested field
      if (inner === undefined) body[outer] = parsed;
      else (body[outer] = body[outer] || {})[inner] = parsed;
    }
    result.textContent = "submitting…";
    const answer = await api(form.dataset.endpoint, { method: "POST", body });
    if (answer.ok) {
      const page = kind === "run" ? "/ui/runs/" : "/ui/tokenizers/";
      result.replaceChildren("started ", el("a", { href: page + answer.data.id, id: kind + "-started", text: answer.data.id }));
      return;
    }
    result.textContent = "";
    const unplaced = [];
    let first = null;
    for (const problem of (answer.data && answer.data.errors) || []) {
      // The input the field names: itself (init_from.run_id), else the field it is in (betas[1] -> betas).
      const field = problem.field || "";
      const named = form.querySelector('.field-error[data-field="' + CSS.escape(field) + '"]');
      const name = named ? field : field.split(/[.[]/)[0];
      const box = named || form.querySelector('.field-error[data-field="' + CSS.escape(name) + '"]');
      if (!box) {
        unplaced.push((problem.field || "body") + ": " + problem.message);
        continue;
      }
      box.textContent = (box.textContent ? box.textContent + "; " : "") + (problem.field !== name ? problem.field + ": " : "") + problem.message;
      const input = document.getElementById(kind + "-" + name);
      input.setAttribute("aria-invalid", "true");
      first = first || input;
    }
    const detail = answer.data && answer.data.detail ? answer.data.detail : problemText(answer);
    document.getElementById(kind + "-form-error").textContent = [detail, ...unplaced].join("; ");
    if (first) first.focus();
  }

  async function tokenizers() {
    const answer = await api("/tokenizers?limit=100&status=succeeded");
    if (!answer.ok) return;
    document.getElementById("succeeded-tokenizers").replaceChildren(
      ...answer.data.items.map((job) => el("option", { value: job.id, text: job.request.method + " " + job.request.vocab_size + " on " + job.request.corpus_path })),
    );
  }

  // ?from=<run_id>&checkpoint=<step> (a run page's "New run from it"): the run form holds that run's request
  // and init_from names its weights; change the corpus or the budget, then launch.
  function shown(input, value) {
    if (value === null || value === undefined) return "";
    if (Array.isArray(value)) return value.join(input.dataset.kind === "list" ? "\n" : ", ");
    return String(value);
  }

  async function prefill() {
    const query = new URLSearchParams(window.location.search);
    const from = query.get("from");
    if (!from) return;
    const answer = await api("/runs/" + encodeURIComponent(from));
    if (!answer.ok) {
      document.getElementById("run-form-error").textContent = "run " + from + ": " + problemText(answer);
      return;
    }
    for (const [name, value] of Object.entries(answer.data.request)) {
      // A nested body (model_options, init_from) fills its inputs <name>.<field>.
      const nested = value !== null && typeof value === "object" && !Array.isArray(value);
      const fields = nested ? Object.entries(value).map(([inner, each]) => [name + "." + inner, each]) : [[name, value]];
      for (const [field, each] of fields) {
        const input = document.getElementById("run-" + field);
        if (input && input.dataset.kind) input.value = shown(input, each);
      }
    }
    document.getElementById("run-init_from.run_id").value = from;
    document.getElementById("run-init_from.checkpoint").value = query.get("checkpoint") || "";
    document.getElementById("run-corpus_path").focus();
  }

  for (const form of document.querySelectorAll("form.launch")) form.addEventListener("submit", submit);
  window.MT.ready.then(tokenizers).then(prefill);
})();
