// What every dashboard page shares: the API key (session storage), calls to the REST API, live streams,
// formatting, the theme toggle and uPlot charts in the page's colours. Exposed as window.MT.
(function () {
  "use strict";
  const KEY = "mt-api-key";
  const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
  const themeListeners = [];

  function key() {
    return sessionStorage.getItem(KEY) || "";
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "text") node.textContent = value;
      else if (name === "className") node.className = value;
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function notice(message) {
    const box = document.getElementById("notice");
    if (box) box.textContent = message || "";
  }

  // One call to the API: {ok, status, data} where data is the decoded JSON (a Problem on errors) or null.
  async function api(path, options) {
    const opts = options || {};
    const headers = { Accept: "application/json" };
    if (key()) headers.Authorization = "Bearer " + key();
    let body;
    if (opts.body !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(opts.body);
    }
    let response;
    try {
      response = await fetch(path, { method: opts.method || "GET", headers, body });
    } catch (error) {
      notice("The API did not answer: " + error.message);
      return { ok: false, status: 0, data: null };
    }
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (error) {
      data = null;
    }
    if (response.status === 401 && !opts.quiet) {
      notice((data && data.detail ? data.detail : "This server needs an API key") + ". Enter it above.");
    }
    return { ok: response.ok, status: response.status, data };
  }

  // A problem's message in one line: its detail and each field error.
  function problemText(result) {
    const problem = result.data || {};
    const parts = [problem.detail || "HTTP " + result.status];
    for (const error of problem.errors || []) parts.push((error.field || "body") + ": " + error.message);
    return parts.join("; ");
  }

  // The job's live events (EventSource: it reconnects by itself and sends Last-Event-ID, which the API
  // resumes after). handlers maps event kinds to functions of the decoded event and its id.
  function stream(path, tail, handlers) {
    const params = new URLSearchParams({ tail: String(tail) });
    if (key()) params.set("access_token", key());
    const source = new EventSource(path + "?" + params.toString());
    const state = { source, opens: 0, errors: 0, events: 0, lastId: "" };
    for (const [kind, handle] of Object.entries(handlers)) {
      if (kind === "open" || kind === "error") continue;
      source.addEventListener(kind, (message) => {
        state.lastId = message.lastEventId;
        state.events += 1;
        handle(JSON.parse(message.data), message.lastEventId);
      });
    }
    source.addEventListener("open", () => {
      state.opens += 1;
      if (handlers.open) handlers.open(state);
    });
    source.addEventListener("error", () => {
      state.errors += 1;
      if (handlers.error) handlers.error(state);
    });
    return state;
  }

  function number(value, digits) {
    if (value === null || value === undefined || Number.isNaN(value)) return "—";
    return Number(value).toLocaleString("en-US", { maximumFractionDigits: digits === undefined ? 4 : digits });
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "—";
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }

  function age(iso) {
    if (!iso) return "—";
    return duration((Date.now() - Date.parse(iso)) / 1000) + " ago";
  }

  function bytes(value) {
    if (value === null || value === undefined) return "—";
    const units = ["B", "KiB", "MiB", "GiB"];
    let size = value;
    let unit = 0;
    while (size >= 1024 && unit < units.length - 1) {
      size /= 1024;
      unit += 1;
    }
    return number(size, unit ? 1 : 0) + " " + units[unit];
  }

  function statusBadge(status) {
    return el("span", { className: "status status-" + status, text: status });
  }

  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  function seriesColor(index) {
    return cssVar("--series-" + ((index % 6) + 1));
  }

  // A uPlot chart in `container`, redrawn in the new colours when the theme changes. `series` are
  // [{label, scale?, points?, bars?}], data is uPlot's [xs, ...ys]. Returns {setData, data()}.
  function chart(container, spec) {
    let data = spec.data || [[], ...spec.series.map(() => [])];
    let plot = null;
    function options() {
      const fg = cssVar("--fg");
      const grid = cssVar("--grid");
      const axis = (scale, label, side, format) => {
        const options = { scale, label, side, stroke: fg, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
        // uPlot takes an explicit undefined as a value: only set what is chosen.
        if (format) Object.assign(options, { values: (u, splits) => splits.map(format), size: 70 });
        return options;
      };
      const scales = { x: { time: false } };
      const axes = [axis("x", spec.xLabel, 2)];
      const seen = new Set();
      spec.series.forEach((series) => {
        const scale = series.scale || "y";
        if (seen.has(scale)) return;
        seen.add(scale);
        scales[scale] = { auto: true, distr: series.log ? 3 : 1 };
        axes.push(axis(scale, series.axisLabel || series.label, seen.size === 1 ? 3 : 1, series.format));
      });
      return {
        width: Math.max(300, container.clientWidth || 600),
        height: spec.height || 260,
        scales,
        axes,
        legend: { live: true },
        cursor: { drag: { x: true, y: false } },
        series: [
          { label: spec.xLabel },
          ...spec.series.map((series, index) => ({
            label: series.label,
            scale: series.scale || "y",
            stroke: series.color || seriesColor(index),
            width: 2,
            spanGaps: true,
            points: { show: series.points === true, size: 6 },
            ...(series.bars ? { fill: seriesColor(index), paths: uPlot.paths.bars({ size: [0.8, 40] }) } : {}),
          })),
        ],
      };
    }
    function draw() {
      if (plot) plot.destroy();
      container.textContent = "";
      plot = new uPlot(options(), data, container);
    }
    draw();
    themeListeners.push(draw);
    let width = container.clientWidth;
    new ResizeObserver(() => {
      if (plot && container.clientWidth && Math.abs(container.clientWidth - width) > 4) {
        width = container.clientWidth;
        plot.setSize({ width: Math.max(300, width), height: spec.height || 260 });
      }
    }).observe(container);
    return {
      setData(next) {
        data = next;
        plot.setData(next);
      },
      data: () => (plot ? plot.data : data), // what uPlot holds, as drawn
    };
  }

  function setTheme(theme) {
    document.documentElement.dataset.theme = theme;
    localStorage.setItem("mt-theme", theme);
    themeListeners.forEach((listener) => listener());
    themeLabel();
  }

  function themeLabel() {
    const toggle = document.getElementById("theme-toggle");
    const dark = currentTheme() === "dark";
    toggle.setAttribute("aria-pressed", dark ? "true" : "false");
    toggle.textContent = dark ? "Light theme" : "Dark theme";
  }

  function currentTheme() {
    return document.documentElement.dataset.theme === "dark" ? "dark" : "light"; // set by theme.js
  }

  // What the key may do: sets body[data-write] (app.css hides .write-only unless it is "true").
  async function checkAccess() {
    const label = document.getElementById("access");
    const result = await api("/ui/access", { quiet: true });
    if (result.ok) {
      document.body.dataset.write = result.data.write ? "true" : "false";
      if (!result.data.keys) label.textContent = "no API keys on this server";
      else label.textContent = result.data.write ? "key: full access" : "key: read-only";
      notice("");
    } else if (result.status === 401) {
      document.body.dataset.write = "none"; // neither write nor the read-only note
      label.textContent = key() ? "key not valid" : "this server needs an API key";
      notice(problemText(result));
    } else {
      label.textContent = "";
    }
    return result.ok;
  }

  function setup() {
    const form = document.getElementById("key-form");
    const input = document.getElementById("api-key");
    input.value = key();
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (input.value.trim()) sessionStorage.setItem(KEY, input.value.trim());
      else sessionStorage.removeItem(KEY);
      location.reload();
    });
    document.getElementById("key-forget").addEventListener("click", () => {
      sessionStorage.removeItem(KEY);
      location.reload();
    });
    const toggle = document.getElementById("theme-toggle");
    themeLabel();
    toggle.addEventListener("click", () => setTheme(currentTheme() === "dark" ? "light" : "dark"));
  }

  setup();
  window.MT = {
    TERMINAL,
    api,
    age,
    bytes,
    chart,
    duration,
    el,
    key,
    notice,
    number,
    problemText,
    statusBadge,
    stream,
    seriesColor,
    setTheme,
    ready: checkAccess(),
  };
})();
