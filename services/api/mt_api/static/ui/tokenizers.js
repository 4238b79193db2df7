// Tokenizers: GET /tokenizers, redrawn every few seconds while one is active.
(function () {
  "use strict";
  const { api, el, number, age, statusBadge, TERMINAL } = window.MT;
  const body = document.querySelector("#tokenizers tbody");
  let timer = null;

  function row(job) {
    const result = job.result;
    const heldout = result && result.statistics ? result.statistics.heldout : null;
    return el(
      "tr",
      { "data-tokenizer": job.id },
      el("td", {}, el("a", { href: "/ui/tokenizers/" + job.id, text: job.id })),
      el("td", {}, statusBadge(job.status)),
      el("td", { text: job.request.method }),
      el("td", { className: "num", text: number(result ? result.vocab_size : job.request.vocab_size, 0) }),
      el("td", { className: "num", text: number(heldout ? heldout.bytes_per_token : null, 3) }),
      el("td", { className: "num", text: number(heldout ? heldout.tokens_per_word : null, 3) }),
      el("td", { className: "num", text: heldout ? number(heldout.roundtrip_exact_rate * 100, 2) + " %" : "—" }),
      el("td", { className: "mono", text: job.request.corpus_path }),
      el("td", { text: age(job.created_at) }),
    );
  }

  async function load() {
    clearTimeout(timer);
    const result = await api("/tokenizers?limit=100");
    if (!result.ok) return;
    body.replaceChildren(...result.data.items.map(row));
    if (!result.data.items.length) body.append(el("tr", {}, el("td", { colspan: 9, className: "muted", text: "No tokenizers." })));
    timer = setTimeout(load, result.data.items.some((job) => !TERMINAL.has(job.status)) ? 2000 : 10000);
  }

  window.MT.ready.then(load);
})();
