// Sets the theme before the page paints: the one chosen with the toggle (kept in localStorage), else the
// system's light or dark setting, followed while no choice is made. app.css styles [data-theme].
(function () {
  "use strict";
  const system = matchMedia("(prefers-color-scheme: dark)");
  function apply() {
    const chosen = localStorage.getItem("mt-theme");
    document.documentElement.dataset.theme = chosen === "light" || chosen === "dark" ? chosen : system.matches ? "dark" : "light";
  }
  apply();
  system.addEventListener("change", apply);
})();
