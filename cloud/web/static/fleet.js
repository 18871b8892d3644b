// Live fleet rows: each server-sent "router" event replaces the cells of that router's row.
(function () {
  "use strict";
  var table = document.getElementById("fleet");
  if (!table || !window.EventSource) { return; }
  var source = new EventSource("/fleet/events");
  source.addEventListener("router", function (message) {
    var row = JSON.parse(message.data);
    var line = table.querySelector('tr[data-router="' + CSS.escape(row.router_id) + '"]');
    if (!line) { return; }
    line.querySelectorAll("td[data-col]").forEach(function (cell) {
      var value = row[cell.getAttribute("data-col")];
      cell.textContent = value === null || value === undefined ? "" : String(value);
    });
    line.setAttribute("data-state", row.state);
    line.classList.add("changed");
  });
}());
