/* backtrace explorer, the side panels. A panel is one call:

     BT.panel({id: "nan", title: "NaN report",
               applies: function (app) { return true; },       // optional: show its tab?
               render: function (el, app) { ... }});           // fill el; called on each change

   `app` gives the page data (app.data, with app.data.panels[id] for a panel's own data from
   backtrace.render.explorer.panel), the model, the selection and the replay frame, and actions:
   app.goTo(nodeId), app.goToModule(path), app.select({type, id}), app.toggle(path). The built-in
   panels follow: the inspector, the parameters, the keys. */
"use strict";
var BT = window.BT = window.BT || {};

BT.panels = [];
BT.panel = function (spec) { BT.panels.push(spec); };

/* A small element builder: BT.h("td", {class: "num", text: "3"}, [children]). */
BT.h = function (tag, attrs, children) {
  var el = document.createElement(tag);
  Object.keys(attrs || {}).forEach(function (k) {
    var v = attrs[k];
    if (k === "text") { el.textContent = v; }
    else if (k.slice(0, 2) === "on") { el.addEventListener(k.slice(2), v); }
    else if (v !== null && v !== undefined && v !== false) { el.setAttribute(k, v); }
  });
  (children || []).forEach(function (c) {
    if (c !== null && c !== undefined) {
      el.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    }
  });
  return el;
};

/* A dotted name that may break after its dots (layers.11.self_attn. | out_proj.weight). */
BT.dotted = function (text) {
  var parts = [];
  text.split(".").forEach(function (p, k, all) {
    parts.push(k < all.length - 1 ? p + "." : p);
    if (k < all.length - 1) { parts.push(BT.h("wbr")); }
  });
  return parts;
};

BT.link = function (text, go, title) {
  return BT.h("button", {"class": "link", type: "button", title: title || null, onclick: go},
              BT.dotted(text));
};

BT.nodeLink = function (app, id) {
  var n = app.model.byId.get(id);
  var text = n ? (n.label === n.id ? n.id : n.label + " (" + n.id + ")") : id;
  return BT.link(text, function () { app.goTo(id); }, "show " + id);
};

BT.STAT_LABELS = {norm: "‖·‖ (L2 norm)", mean: "mean", absmax: "max |·|"};
BT.NOT_STATS = ["text", "shapeText", "dtype", "items", "parts", "num"];

/* A value's numbers as rows: shape and dtype, then every statistic the trace recorded. */
BT.statRows = function (v) {
  if (!v) { return [["", "—"]]; }
  if (v.parts) {
    return v.parts.map(function (p, k) { return ["output " + k, p ? p.text : "—"]; });
  }
  if (!v.shapeText) { return [["", v.text]]; }
  var rows = [["shape", v.shapeText + " " + v.dtype]];
  Object.keys(v).forEach(function (k) {
    if (BT.NOT_STATS.indexOf(k) < 0) { rows.push([BT.STAT_LABELS[k] || k, BT.number(v[k])]); }
  });
  if (v.items) { rows.push(["elements", v.items]); }
  return rows;
};

/* A value as the inspector shows it: a number in large type, a tensor as its statistics, or
   `none` (default "not recorded") when there is none. */
BT.valueBlock = function (v, none) {
  if (!v) { return BT.h("p", {"class": "hint", text: none || "not recorded"}); }
  if (!v.shapeText && !v.parts) { return BT.h("p", {"class": "big", text: v.text}); }
  return BT.table(BT.statRows(v));
};

/* A number as backtrace.values.format_number writes it (Python's %.6g): -4, 0.196612, 1.69107e-06;
   `digits` significant digits (BT.short: 3, for scales). */
BT.number = function (x, digits) {
  if (x === null || x === undefined) { return "—"; }
  var v = Number(x), d = digits || 6;
  if (!isFinite(v)) { return isNaN(v) ? "nan" : v > 0 ? "inf" : "-inf"; }
  if (Number.isInteger(v) && Math.abs(v) < 1e15) { return String(v); }
  var exp = v.toExponential(d - 1).split("e"), e = Number(exp[1]);
  if (e < -4 || e >= d) {
    return exp[0].replace(/\.?0+$/, "") + "e" + (e < 0 ? "-" : "+")
      + String(Math.abs(e)).padStart(2, "0");
  }
  return v.toPrecision(d).replace(/(\.\d*?)0+$/, "$1").replace(/\.$/, "");
};

BT.short = function (x) { return BT.number(x, 3); };

BT.table = function (rows, head) {
  var body = rows.map(function (r) {
    return BT.h("tr", {}, r.map(function (c, k) {
      return BT.h("td", {"class": k ? "num" : null}, [typeof c === "string" ? c : c]);
    }));
  });
  var thead = head ? BT.h("thead", {}, [BT.h("tr", {}, head.map(function (t) {
    return BT.h("th", {text: t});
  }))]) : null;
  return BT.h("table", {}, [thead, BT.h("tbody", {}, body)]);
};

BT.section = function (title, children) {
  return BT.h("section", {}, [BT.h("h3", {text: title})].concat(children));
};

BT.crumbs = function (app, module) {
  if (!module) { return BT.h("p", {"class": "crumbs", text: "top level"}); }
  var comps = module.split("."), parts = [];
  comps.forEach(function (c, k) {
    var path = comps.slice(0, k + 1).join(".");
    if (k) { parts.push(" › "); }
    parts.push(BT.link(c, function () { app.goToModule(path); }, "module " + path));
  });
  return BT.h("p", {"class": "crumbs"}, ["in "].concat(parts));
};

/* ---------------------------------------------------------------- the inspector */

BT.inspectNode = function (el, app, n) {
  var model = app.model, data = app.data, k = model.stepOf.get(n.id);
  var kind = n.kind === "op" ? n.op + (n.type && n.type !== n.op ? " · " + n.type : "")
    : n.kind === "input" && n.module ? "parameter" : n.kind;
  el.appendChild(BT.h("h2", {}, BT.dotted(n.label)));
  el.appendChild(BT.h("p", {"class": "sub", text: kind + (n.label !== n.id ? " · " + n.id : "")
    + (n.expr ? " · " + n.id + " = " + n.expr : "")}));
  el.appendChild(BT.crumbs(app, n.module));
  el.appendChild(BT.section("Value", [BT.valueBlock(n.value)]));
  if (data.mode === "backward") {
    var fanIn = n.gradText.indexOf(" + ") > 0;  // (9) + (12) + (12) = 33: numbers only
    el.appendChild(BT.section("Gradient ∂" + data.output + "/∂" + n.id, [
      fanIn ? BT.h("p", {"class": "big", text: n.gradText})
            : BT.valueBlock(n.grad, n.gradText === "—" ? "no gradient reaches it" : n.gradText)]));
    el.appendChild(BT.upstream(app, n));
    if (k !== undefined) { el.appendChild(BT.stepTable(app, k)); }
  }
  if (n.saved) {
    el.appendChild(BT.section("Saved for backward", [BT.table(Object.keys(n.saved).map(
      function (s) { return [s, n.saved[s]]; }))]));
  }
};

/* Where the node's gradient comes from: the contribution each consumer's step sent it. */
BT.upstream = function (app, n) {
  var into = app.model.into.get(n.id) || [];
  if (n.id === app.data.output) {
    return BT.section("Upstream", [BT.h("p", {text: "the output: the backward pass starts here "
      + "with ∂" + n.id + "/∂" + n.id + " = " + n.gradText})]);
  }
  if (!into.length) {
    return BT.section("Upstream", [BT.h("p", {text: "no gradient reaches this node"})]);
  }
  var rows = into.map(function (c) {
    var e = c.edge;
    return [BT.nodeLink(app, c.from), "step " + (c.step + 1),
            e.contribution ? e.contribution.text : (e.note || "no gradient")];
  });
  return BT.section("Upstream: what each consumer sends", [BT.table(rows, ["from", "", "contribution"])]);
};

/* The node's own backward step: upstream × local = contribution for each input edge. */
BT.stepTable = function (app, k) {
  var step = app.data.steps[k];
  var rows = step.edges.map(function (e) {
    var local = e.local ? e.local.text : "", rule = e.rule;
    if (app.data.scalar && rule) { rule = "∂" + step.node + "/∂" + e.input + " = " + rule; }
    if (local && local !== e.rule) { rule += " = " + local; }
    return [BT.nodeLink(app, e.input), rule,
            e.contribution ? e.contribution.text : (e.note || "no gradient")];
  });
  return BT.section("Backward step " + (k + 1) + " of " + app.data.steps.length
    + ": upstream " + (step.upstream ? step.upstream.text : "—") + " × local = contribution",
    [BT.table(rows, ["to input", "local derivative", "contribution"])]);
};

BT.inspectModule = function (el, app, path) {
  var m = app.model.modules.get(path), open = app.model.foldedAt(path) === null;
  el.appendChild(BT.h("h2", {}, BT.dotted(path)));
  el.appendChild(BT.h("p", {"class": "sub", text: "module · " + m.nodes + " nodes · "
    + m.params.length + " parameters"}));
  el.appendChild(BT.crumbs(app, BT.parentPath(path)));
  el.appendChild(BT.h("p", {}, [BT.h("button", {type: "button", "class": "action",
    text: open ? "Fold into one box" : "Unfold", onclick: function () { app.toggle(path); }})]));
  if (app.data.mode === "backward") {  // backward enters a module at its outputs
    el.appendChild(BT.section("Gradient norm at its boundary", [BT.table([
      ["at its outputs (from its consumers)", m.gradOut ? m.gradOut.text : "—"],
      ["at its inputs (what it sends back)", m.gradIn ? m.gradIn.text : "? (only statistics of "
        + "several contributions)"]])]));
  }
  if (m.params.length) {
    el.appendChild(BT.section("Parameters", [BT.table(m.params.map(function (id) {
      var n = app.model.byId.get(id), short = n.label.slice(path.length + 1) || n.label;
      return [BT.link(short, function () { app.goTo(id); }, id),
              BT.h("span", {"class": "nowrap",
                            text: n.value ? (n.value.shapeText || n.value.text) : ""}),
              n.grad ? BT.number(n.grad.norm) : "—"];
    }), ["name", "shape", "‖gradient‖"])]));
  }
  el.appendChild(BT.section("Outputs", m.outputs.map(function (id) {
    return BT.h("div", {}, [BT.nodeLink(app, id)]);
  })));
};

BT.inspectWire = function (el, app, wire) {
  el.appendChild(BT.h("h2", {text: "wire"}));
  el.appendChild(BT.h("p", {"class": "sub", text: wire.links.length + " link"
    + (wire.links.length > 1 ? "s" : "") + " between what is drawn"}));
  var rows = wire.links.map(function (l) {
    var e = app.model.edgeOf(l), src = app.model.byId.get(l.src);
    return [BT.nodeLink(app, l.src), BT.nodeLink(app, l.dst), src.value ? src.value.text : "—",
            e && e.contribution ? e.contribution.text : (e && e.note) || "no gradient"];
  });
  el.appendChild(BT.section("Forward value and backward contribution",
    [BT.table(rows, ["from", "to", "value", "contribution"])]));
};

BT.panel({
  id: "inspect", title: "Inspect",
  render: function (el, app) {
    var s = app.selection;
    if (!s) {
      el.appendChild(BT.h("p", {"class": "hint", text: "Click a node, a folded module or a wire "
        + "to see its value and gradient, what reaches it and what each edge contributes. "
        + "Press / to search by name."}));
      return;
    }
    if (s.type === "node") { BT.inspectNode(el, app, app.model.byId.get(s.id)); }
    else if (s.type === "module") { BT.inspectModule(el, app, s.id); }
    else if (s.type === "wire") { BT.inspectWire(el, app, s.wire); }
  }
});

/* ---------------------------------------------------------------- parameters and inputs */

BT.panel({
  id: "params", title: "Gradients",
  render: function (el, app) {
    var leaves = app.model.nodes.filter(function (n) { return n.kind === "input"; });
    leaves.sort(function (a, b) {
      return (b.grad ? Number(b.grad.norm) : -1) - (a.grad ? Number(a.grad.norm) : -1);
    });
    var decades = app.data.style.decades;
    el.appendChild(BT.h("p", {"class": "hint", text: leaves.length + " inputs and parameters, "
      + "largest gradient first; the bar is ‖gradient‖, one step per decade."}));
    el.appendChild(BT.table(leaves.map(function (n) {
      var v = n.grad ? Number(n.grad.norm) : NaN, c = BT.normColour(v, decades,
        app.data.style.palette), t = c ? (c.level + 1) / app.data.style.palette.length : 0;
      var bar = BT.h("span", {"class": "bar", style: "width:" + Math.round(t * 60) + "px;"
        + "background:" + (c ? c.fill : "transparent")});
      return [BT.nodeLink(app, n.id), n.grad ? BT.number(n.grad.norm) : "—", bar];
    }), ["name", "‖gradient‖", ""]));
  }
});

/* ---------------------------------------------------------------- keys and colours */

BT.KEYS = [
  ["/", "search a node, parameter or module by name"],
  ["Enter or double-click", "unfold the selected module (fold it again from its header)"],
  ["Backspace", "fold the module holding the selection"],
  ["Esc", "clear the selection and the search"],
  ["[ and ]", "fold every module one level more, or unfold one level more"],
  ["← ↑ → ↓", "pan (in replay: step)"],
  ["f", "fit the graph to the window"],
  ["+ / −, ctrl + wheel", "zoom; the wheel or a drag on the background pans"],
  ["r", "replay the backward pass; then ← → (or space) step, Home and End jump"],
  ["d", "lay out down or across"],
  ["l", "show or hide the labels on the wires"]
];

BT.panel({
  id: "keys", title: "Keys",
  render: function (el, app) {
    el.appendChild(BT.section("Keyboard and mouse", [BT.table(BT.KEYS.map(function (k) {
      return [BT.h("kbd", {text: k[0]}), k[1]];
    }))]));
    el.appendChild(BT.section("Colours", [BT.h("p", {text: BT.legendText(app.data)})]));
  }
});

BT.legendText = function (data) {
  if (data.mode !== "backward" || data.colour !== "grad") {
    return "Fill shows the kind of node: inputs blue, operations white, constants grey, the "
      + "output green, folded modules violet.";
  }
  var labels = data.style.decades.labels;
  return "Fill shows ‖gradient‖, one colour per decade on a fixed scale (the same in every "
    + "backtrace picture): palest below " + labels[1].replace("<", "") + ", orange around 1 (a "
    + "loss's own gradient), deep red from " + labels[labels.length - 2] + " on (exploding). "
    + "Purple: a NaN or infinite gradient. Rounded boxes are inputs and parameters, stacked "
    + "boxes folded modules, the double border the output.";
};
