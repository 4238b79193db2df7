// Corpora: GET /corpora; an upload (PUT /corpora/{name}) with a progress bar, and deletes. The upload goes
// through XMLHttpRequest because fetch reports no upload progress; the key travels in its header.
(function () {
  "use strict";
  const { api, el, number, age, bytes, problemText } = window.MT;
  const body = document.querySelector("#corpora tbody");
  const form = document.getElementById("upload-form");
  const progress = document.getElementById("upload-progress");
  const result = document.getElementById("upload-result");

  function row(info) {
    const remove = el("button", { type: "button", className: "danger", text: "Delete" });
    remove.addEventListener("click", () => drop(info.name, remove));
    return el(
      "tr",
      { "data-corpus": info.name },
      el("td", { className: "mono", text: info.name }),
      el("td", { className: "num", text: number(info.files.length, 0) }),
      el("td", { className: "num", text: bytes(info.bytes) }),
      el("td", { className: "num", text: number(info.lines, 0) }),
      el("td", { className: "mono", title: info.sha256, text: info.sha256.slice(0, 12) }),
      el("td", { text: age(info.created_at) }),
      el("td", { className: "write-only" }, remove),
    );
  }

  async function load() {
    const answer = await api("/corpora");
    if (!answer.ok) return;
    body.replaceChildren(...answer.data.map(row));
    if (!answer.data.length) body.append(el("tr", {}, el("td", { colspan: 7, className: "muted", text: "No corpora." })));
  }

  async function drop(name, button) {
    button.disabled = true;
    const answer = await api("/corpora/" + encodeURIComponent(name), { method: "DELETE" });
    result.textContent = answer.ok ? "deleted " + name : problemText(answer);
    button.disabled = false;
    await load();
  }

  function upload(name, file, refuseOverwrite) {
    return new Promise((resolve) => {
      const request = new XMLHttpRequest();
      // gzip and zip are known by their first bytes and the rest is text, unless the file says JSONL.
      const format = file.name.toLowerCase().endsWith(".jsonl") ? "?format=jsonl" : "";
      request.open("PUT", "/corpora/" + encodeURIComponent(name) + format);
      const key = sessionStorage.getItem("mt-api-key");
      if (key) request.setRequestHeader("Authorization", "Bearer " + key);
      if (refuseOverwrite) request.setRequestHeader("If-None-Match", "*");
      request.setRequestHeader("Content-Type", "application/octet-stream");
      request.upload.addEventListener("progress", (event) => {
        if (event.lengthComputable) progress.value = event.loaded / event.total;
      });
      request.addEventListener("load", () => {
        let data = null;
        try {
          data = request.responseText ? JSON.parse(request.responseText) : null;
        } catch (error) {
          data = null;
        }
        resolve({ ok: request.status >= 200 && request.status < 300, status: request.status, data });
      });
      request.addEventListener("error", () => resolve({ ok: false, status: 0, data: null }));
      request.send(file);
    });
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = document.getElementById("corpus-name").value.trim();
    const file = document.getElementById("corpus-file").files[0];
    if (!name || !file) {
      result.textContent = "give a name and a file";
      return;
    }
    progress.hidden = false;
    progress.value = 0;
    result.textContent = "uploading " + file.name + "…";
    const answer = await upload(name, file, document.getElementById("corpus-no-overwrite").checked);
    result.textContent = answer.ok
      ? "uploaded " + answer.data.name + ": " + number(answer.data.lines, 0) + " lines, " + bytes(answer.data.bytes)
      : problemText(answer);
    await load();
  });

  window.MT.ready.then(load);
})();
