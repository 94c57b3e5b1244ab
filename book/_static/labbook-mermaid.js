// Draw every <pre class="mermaid"> of the page as SVG with the Mermaid script shipped in
// _static (nothing is fetched from elsewhere). When done, <html data-mermaid="..."> says how it
// went: "drawn" (every diagram), or "failed: ..." (the browser test reads it).
document.addEventListener("DOMContentLoaded", function () {
  var root = document.documentElement;
  if (typeof mermaid === "undefined") { root.dataset.mermaid = "failed: no mermaid script"; return; }
  var dark = root.dataset.theme === "dark";
  mermaid.initialize({ startOnLoad: false, securityLevel: "strict", theme: dark ? "dark" : "default" });
  mermaid.run({ querySelector: "pre.mermaid" })
    .then(function () { root.dataset.mermaid = "drawn"; })
    .catch(function (err) { root.dataset.mermaid = "failed: " + err; });
});
