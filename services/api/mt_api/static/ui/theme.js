// Applies the theme chosen with the toggle (kept in localStorage) before the page paints; without a choice
// the system's light or dark setting applies (app.css).
(function () {
  "use strict";
  const chosen = localStorage.getItem("mt-theme");
  if (chosen === "light" || chosen === "dark") document.documentElement.dataset.theme = chosen;
})();
