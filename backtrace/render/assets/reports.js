/* backtrace explorer, the debugging reports: a NaN tab where the page's trace holds an inf or NaN
   (data.panels.nan, from Trace.nonfinite) and a Diff tab on the page `backtrace diff A B -o`
   writes (data.panels.diff, the report's JSON and text). Both link to the nodes they name. */
"use strict";

/* The report's text as the terminal prints it, laid out in Python for the panel's width. */
BT.reportText = function (lines) {
  return BT.h("pre", {"class": "report", style: "white-space:pre;overflow-x:auto;font-size:11px"},
              [lines.join("\n")]);
};

BT.nodeLinks = function (app, title, ids) {
  var known = ids.filter(function (id) { return id && app.model.byId.get(id); });
  if (!known.length) { return null; }
  var items = [];
  known.forEach(function (id, k) {
    if (k) { items.push(", "); }
    items.push(BT.nodeLink(app, id));
  });
  return BT.h("p", {}, [title + ": "].concat(items));
};

BT.append = function (el, child) { if (child) { el.appendChild(child); } };

BT.panel({
  id: "nan", title: "NaN",
  applies: function (app) { return !!(app.data.panels && app.data.panels.nan); },
  render: function (el, app) {
    var r = app.data.panels.nan;
    el.appendChild(BT.h("p", {"class": "hint", text: "Where the first inf or NaN starts, in "
      + "backward order, and why (upstream × local); the nodes after it only pass it on."}));
    BT.append(el, BT.nodeLinks(app, "culprit (" + r.cause + ")", [r.culprit]));
    if (r.forward && r.forward !== r.culprit) {
      BT.append(el, BT.nodeLinks(app, "first non-finite forward value", [r.forward]));
    }
    el.appendChild(BT.reportText(r.lines));
    BT.append(el, BT.nodeLinks(app, "passed on by", r.propagators.slice(0, 12)));
  }
});

BT.panel({
  id: "diff", title: "Diff",
  applies: function (app) { return !!(app.data.panels && app.data.panels.diff); },
  render: function (el, app) {
    var d = app.data.panels.diff;
    el.appendChild(BT.h("p", {"class": "hint", text: "This page shows run " + d.b + "; the "
      + "report compares it with run " + d.a + " node by node, in backward order."}));
    if (d.first) {
      BT.append(el, BT.nodeLinks(app, "first divergence (" + d.first.what + ")",
                                 [d.first.node_b]));
    }
    var worst = d.modules.filter(function (m) { return m.worst; }).slice(0, 8);
    BT.append(el, BT.nodeLinks(app, "worst node per module",
                               worst.map(function (m) { return m.worst; })));
    el.appendChild(BT.reportText([d.text]));
  }
});
