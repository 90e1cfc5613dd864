// The dashboard's chart: spend, revenue and margin per hour, from /dashboard/data/series.
// Money in tables is rendered by the server from exact decimal strings; the chart plots floats.
(function () {
  "use strict";
  var REFRESH_MS = 15000;
  var el = document.getElementById("chart");
  if (!el || typeof uPlot === "undefined") { return; }
  var plot = null;

  function url() {
    var q = new URLSearchParams({ hours: el.dataset.hours || "48" });
    if (el.dataset.tenant) { q.set("tenant", el.dataset.tenant); }
    return el.dataset.url + "?" + q.toString();
  }

  function money(u, v) { return v == null ? "" : "$" + v.toFixed(4); }

  function options(width) {
    var tenantView = el.dataset.tenantView === "1";
    var series = [{}];
    if (!tenantView) {
      series.push({ label: "Cost", stroke: "#c0392b", width: 2, value: money });
    }
    series.push({ label: tenantView ? "Spend" : "Usage revenue", stroke: "#1f77b4", width: 2, value: money });
    if (!tenantView) {
      series.push({ label: "Margin", stroke: "#2e8b57", width: 2, value: money, fill: "rgba(46,139,87,0.08)" });
    }
    return {
      width: width,
      height: 260,
      series: series,
      axes: [{}, { values: function (u, vals) { return vals.map(function (v) { return "$" + v; }); }, size: 70 }],
      scales: { x: { time: true } },
    };
  }

  function columns(data) {
    if (el.dataset.tenantView === "1") { return [data.t, data.revenue]; }
    return [data.t, data.cost, data.revenue, data.margin];
  }

  function draw(data) {
    var width = Math.max(300, el.clientWidth);
    if (plot === null) {
      plot = new uPlot(options(width), columns(data), el);
    } else {
      plot.setData(columns(data));
    }
    el.dataset.points = String(data.t.length);
  }

  function load() {
    fetch(url(), { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) { throw new Error("series: HTTP " + r.status); } return r.json(); })
      .then(draw)
      .catch(function (err) { el.dataset.error = String(err); });
  }

  window.addEventListener("resize", function () {
    if (plot !== null) { plot.setSize({ width: Math.max(300, el.clientWidth), height: 260 }); }
  });
  load();
  window.setInterval(load, REFRESH_MS);
})();
