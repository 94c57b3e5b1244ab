// The language switch: a link to the same page in the other edition. Editions live at the
// book's root (the first) and in a folder each (ja/); data-from / data-to name those folders.
document.addEventListener("DOMContentLoaded", function () {
  var root = document.documentElement.dataset.content_root || "./";
  document.querySelectorAll("a.labbook-edition").forEach(function (a) {
    var from = a.dataset.from, to = a.dataset.to;
    var top = from ? root + "../" : root;                  // the first edition's root
    var here = location.pathname.split("/");
    var depth = root.split("/").filter(function (s) { return s === ".."; }).length;
    var page = here.slice(here.length - 1 - depth).join("/");
    a.href = top + (to ? to + "/" : "") + page;
  });
});
