/* backtrace explorer, the Training tab: backtrace.watch's layer × step heatmaps (gradient RMS,
   update/weight, share of exact zeros), one row per layer, one cell per stretch of steps,
   coloured in Python as in the terminal (data.panels.training, from backtrace.training.explore). */
"use strict";
BT.panel({
  id: "training", title: "Training",
  applies: function (app) { return !!(app.data.panels && app.data.panels.training); },
  render: function (el, app) {
    var t = app.data.panels.training;
    el.appendChild(BT.h("p", {"class": "hint", text: t.steps + " steps of training, layer × "
      + "step; hover a cell for its layer, steps and value."}));
    t.maps.forEach(function (m) {
      el.appendChild(BT.h("h3", {text: m.title}));
      var width = Math.max(2, Math.floor(240 / Math.max(1, m.starts.length)));
      var rows = m.layers.map(function (layer, i) {
        var cells = m.cells[i].map(function (c, j) {
          var end = j + 1 < m.starts.length ? m.starts[j + 1] - 1 : m.last;
          var steps = m.starts[j] === end ? "step " + end : "steps " + m.starts[j] + "–" + end;
          var text = c.v === null ? "no gradient" : c.v === "nan" ? "NaN or inf"
            : m.log ? BT.number(c.v, 3) : Math.round(100 * c.v) + "%";
          return BT.h("span", {"class": "hm" + (c.v === "nan" ? " bad" : ""),
            style: "display:inline-block;height:12px;width:" + width + "px;background:"
              + (c.c || "transparent"), title: layer + ", " + steps + ": " + text});
        });
        return BT.h("div", {"class": "hm-row", style: "white-space:nowrap;line-height:0"},
                    [BT.h("span", {"class": "hm-name", text: layer, style: "display:inline-block;"
                      + "width:70px;font-size:11px;line-height:12px;overflow:hidden;"
                      + "vertical-align:top"})].concat(cells));
      });
      el.appendChild(BT.h("div", {"class": "heatmap", "data-metric": m.metric}, rows));
      el.appendChild(BT.h("p", {"class": "hint", text: "low " + m.low + " … high " + m.high
        + (m.log ? " (log scale)" : "") + "; magenta: NaN/inf, grey: zero, blank: none"}));
    });
  }
});
