// One tokenizer: the record (GET /tokenizers/{id}) with its held-out statistics, the token-length histogram
// and top tokens; the split box encodes a text (POST /tokenizers/{id}/encode) and shows each token as a span.
(function () {
  "use strict";
  const { api, el, number, bytes, age, statusBadge, problemText, TERMINAL } = window.MT;
  const tokenizerId = document.body.dataset.item;
  const base = "/tokenizers/" + encodeURIComponent(tokenizerId);
  const $ = (id) => document.getElementById(id);
  let method = "bpe";
  const histogram = window.MT.chart($("histogram"), {
    xLabel: "bytes",
    series: [{ label: "tokens", bars: true }],
    height: 240,
  });

  // Byte-level BPE stores each byte as a printable character (GPT-2's bytes_to_unicode, Radford et al. 2019):
  // the printable Latin-1 ranges stand for themselves, the other bytes for U+0100 onwards, in byte order.
  const byteOf = new Map();
  (function () {
    const printable = [];
    for (let b = 0x21; b <= 0x7e; b++) printable.push(b);
    for (let b = 0xa1; b <= 0xac; b++) printable.push(b);
    for (let b = 0xae; b <= 0xff; b++) printable.push(b);
    const kept = new Set(printable);
    let next = 0;
    for (let b = 0; b < 256; b++) {
      if (kept.has(b)) byteOf.set(String.fromCodePoint(b), b);
      else byteOf.set(String.fromCodePoint(256 + next++), b);
    }
  })();

  // The bytes a stored token stands for.
  function tokenBytes(token) {
    if (method === "sentencepiece") {
      const fallback = /^<0x([0-9A-Fa-f]{2})>$/.exec(token);
      if (fallback) return new Uint8Array([parseInt(fallback[1], 16)]);
      return new TextEncoder().encode(token.replaceAll("\u2581", " "));
    }
    const out = [];
    for (const char of token) {
      if (byteOf.has(char)) out.push(byteOf.get(char));
      else out.push(...new TextEncoder().encode(char));
    }
    return new Uint8Array(out);
  }

  function split(ids, tokens) {
    // One streaming decoder: a character whose bytes span tokens appears in the token that completes it.
    const decoder = new TextDecoder("utf-8", { fatal: false });
    const spans = tokens.map((token, index) => {
      const text = decoder.decode(tokenBytes(token), { stream: true });
      // A token holding only the first bytes of a character shows a dot (drawn by CSS: not part of the text).
      const className = "tok tok-" + (index % 6) + (text ? "" : " tok-partial");
      return el("span", { className, title: "id " + ids[index] + ": " + JSON.stringify(token), "data-id": ids[index] }, text);
    });
    const rest = decoder.decode();
    if (rest) spans.push(el("span", { className: "tok" }, rest));
    return spans;
  }

  // Whitespace drawn as symbols, for tokens shown on their own.
  function visible(text) {
    return text.replaceAll(" ", "\u2423").replaceAll("\n", "\u21b5").replaceAll("\t", "\u21e5") || "\u00b7";
  }

  function rows(table, pairs) {
    $(table).replaceChildren(
      el("tbody", {}, ...pairs.map(([name, value]) => el("tr", {}, el("th", { scope: "row", text: name }), el("td", { className: "num", text: value })))),
    );
  }

  function percent(value) {
    return value === null || value === undefined ? "—" : number(value * 100, 3) + " %";
  }

  function show(job) {
    method = job.request.method;
    $("status").replaceChildren(statusBadge(job.status));
    $("summary").textContent = job.request.method + ", vocab_size " + job.request.vocab_size + " · corpus " + job.request.corpus_path + " · created " + age(job.created_at);
    $("error").textContent = job.error ? job.error.code + ": " + job.error.message : "";
    $("cancel").hidden = !["queued", "running", "stalled"].includes(job.status);
    const config = Object.entries(job.request).filter(([, value]) => value !== null).map(([name, value]) => [name, JSON.stringify(value)]);
    const stats = job.result ? job.result.statistics : null;
    if (stats) {
      config.push(["corpus bytes", bytes(stats.corpus.bytes)], ["corpus lines", number(stats.corpus.lines, 0)]);
      config.push(["training lines", number(stats.training_lines, 0)], ["training seconds", number(stats.training_seconds, 2)]);
      config.push(["MB/s", number(stats.megabytes_per_second, 2)]);
    }
    rows("config", config);
    if (stats && stats.heldout) {
      const h = stats.heldout;
      rows("heldout", [
        ["vocab_size learned", number(stats.vocab_size, 0)],
        ["held-out lines", number(h.lines, 0)],
        ["held-out bytes", number(h.bytes, 0)],
        ["tokens", number(h.tokens, 0)],
        ["bytes per token", number(h.bytes_per_token, 3)],
        ["characters per token", number(h.chars_per_token, 3)],
        ["tokens per word", number(h.tokens_per_word, 3)],
        ["unknown-token rate", percent(h.unk_rate)],
        ["byte-fallback rate", percent(h.byte_fallback_rate)],
        ["character coverage", percent(h.char_coverage)],
        ["exact round-trip rate", percent(h.roundtrip_exact_rate)],
      ]);
      const total = h.tokens || 1;
      $("top").querySelector("tbody").replaceChildren(
        ...h.top_tokens.slice(0, 30).map((t, index) =>
          el(
            "tr",
            {},
            el("td", { className: "num", text: index + 1 }),
            el("td", { className: "mono" }, el("span", { className: "tok tok-" + (index % 6) }, visible(new TextDecoder().decode(tokenBytes(t.token)))), " ", el("span", { className: "muted", text: JSON.stringify(t.token) })),
            el("td", { className: "num", text: t.id }),
            el("td", { className: "num", text: number(t.count, 0) + " (" + number((100 * t.count) / total, 2) + " %)" }),
          ),
        ),
      );
    }
    if (stats) {
      const bins = stats.token_length_histogram;
      histogram.setData([bins.map((b) => b.bytes), bins.map((b) => b.count)]);
    }
    $("split-form").querySelector("button").disabled = job.status !== "succeeded";
  }

  async function load() {
    const result = await api(base);
    if (!result.ok) {
      $("error").textContent = problemText(result);
      return;
    }
    show(result.data);
    if (!TERMINAL.has(result.data.status)) setTimeout(load, 2000);
  }

  $("split-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("split-error").textContent = "";
    const text = $("split-text").value;
    const result = await api(base + "/encode", { method: "POST", body: { text } });
    if (!result.ok) {
      $("tokens").textContent = "";
      $("split-error").textContent = problemText(result);
      return;
    }
    const count = result.data.ids.length;
    $("split-summary").textContent = count + " tokens, " + number(new TextEncoder().encode(text).length / Math.max(count, 1), 2) + " bytes per token";
    $("tokens").replaceChildren(...split(result.data.ids, result.data.tokens));
  });
  $("cancel").addEventListener("click", async () => {
    const result = await api(base + "/cancel", { method: "POST" });
    $("action-result").textContent = result.ok ? "cancel: done" : problemText(result);
    load();
  });

  window.MT.ready.then(load);
})();
