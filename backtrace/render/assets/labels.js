/* backtrace explorer, what each element says: its rows of text (measured with the browser's own
   font metrics, so boxes fit their text), the labels on the wires and the gradient colours. */
"use strict";
var BT = window.BT = window.BT || {};

BT.FONT = '"DejaVu Sans", "Liberation Sans", Arial, Helvetica, sans-serif';
BT.SIZE = {font: 12, small: 10.5, line: 16, pad: 6, gap: 14, header: 18, maxLabel: 40,
           maxText: 48};  // longer names and values lose their middle in a box (whole in the panel)

/* Long names lose their middle, never their ends: both ends tell layers.10 from layers.11. */
BT.elide = function (text, most) {
  if (text.length <= most) { return text; }
  var head = Math.ceil((most - 1) / 2);
  return text.slice(0, head) + "…" + text.slice(text.length - (most - 1 - head));
};

BT.Measure = function () {
  this.ctx = document.createElement("canvas").getContext("2d");
  this.cache = new Map();
};
BT.Measure.prototype.width = function (text, font) {
  var key = font + "\u0000" + text;
  if (!this.cache.has(key)) {
    this.ctx.font = font;
    this.cache.set(key, Math.ceil(this.ctx.measureText(text).width));
  }
  return this.cache.get(key);
};
BT.fonts = {
  bold: "bold " + BT.SIZE.font + "px " + BT.FONT,
  normal: BT.SIZE.font + "px " + BT.FONT,
  small: BT.SIZE.small + "px " + BT.FONT
};

/* The rows of text an element shows. A row is [left, right, classes]; the gradient row keeps
   every text it can take in replay (`texts`) so the box is sized for the widest. */
BT.rows = function (el, model, backward, cluster) {
  var rows = [];
  if (el.node) {
    var n = el.node, label = n.label;
    if (cluster && label.indexOf(cluster + ".") === 0) { label = label.slice(cluster.length + 1); }
    rows.push({left: BT.elide(label, BT.SIZE.maxLabel), right: BT.elide(n.tag, 24), cls: "title"});
    if (n.expr) { rows.push({left: BT.elide(n.expr, 48), right: "", cls: "expr"}); }
    var fit = function (t) { return BT.elide(t, BT.SIZE.maxText); };
    if (n.value) { rows.push({left: "value", right: fit(n.value.text), cls: "value"}); }
    if (backward) {
      rows.push({left: "grad", right: fit(n.gradText), cls: "grad",
                 texts: model.gradTexts(n).map(fit)});
    }
  } else {
    var m = el.module, title = el.path;
    if (cluster && !/^\d+$/.test(title.slice(cluster.length + 1))) {
      title = title.slice(cluster.length + 1);
    }
    rows.push({left: BT.elide(title, BT.SIZE.maxLabel), right: m.nodes + " nodes", cls: "title",
               expand: true});
    if (backward) {  // as the static pictures: the gradient norm at its inputs and its outputs
      rows.push({left: "grad", right: "in " + (m.gradIn ? m.gradIn.text : "?") + " · out "
                 + (m.gradOut ? m.gradOut.text : "—"), cls: "grad"});
    }
  }
  return rows;
};

BT.rowWidth = function (row, measure) {
  var font = row.cls === "title" ? BT.fonts.bold : row.cls === "expr" ? BT.fonts.small
    : BT.fonts.normal;
  var left = measure.width(row.left, row.cls === "title" ? BT.fonts.bold : font);
  var rights = (row.texts || [row.right]).map(function (t) {
    return measure.width(t, row.cls === "title" ? BT.fonts.small : BT.fonts.normal);
  });
  var right = Math.max.apply(null, rights);
  return left + (right ? BT.SIZE.gap + right : 0) + (row.expand ? 16 : 0);
};

/* The lines of a wire's label: the forward value it carries, then upstream × local =
   contribution (∂ contribution for tensors). A wire standing for several links shows the value
   when they all carry the same one, and no contribution; null when there is nothing to show. */
BT.wireLabel = function (wire, model, backward) {
  var link = wire.links[0], src = model.byId.get(link.src), lines = [];
  var same = wire.links.every(function (l) { return l.src === link.src; });
  if (src.value && same) { lines.push({text: src.value.shapeText || src.value.text, cls: "fwd"}); }
  var e = backward && wire.links.length === 1 ? model.edgeOf(link) : null;
  if (e) {
    var step = model.data.steps[model.stepOf.get(link.dst)], text;
    if (!e.contribution) { text = e.note || "no gradient"; }
    else if (e.local && e.local.num !== undefined) {
      text = step.upstream.text + " × " + e.local.text + " = " + e.contribution.text;
    } else { text = "∂ " + e.contribution.text; }
    lines.push({text: text, cls: e.contribution ? "bwd" : "bwd none", alt: "pending"});
  }
  return lines.length ? lines : null;
};

/* A wire's tooltip: what it joins, and for one link what flows back along it. */
BT.wireTitle = function (wire, model) {
  var ends = wire.links.map(function (l) { return l.src + " → " + l.dst; });
  var text = ends.slice(0, 4).join("\n") + (ends.length > 4 ? "\n… " + ends.length + " links" : "");
  var e = wire.links.length === 1 ? model.edgeOf(wire.links[0]) : null;
  return text + (e && e.contribution ? "\ncontribution " + e.contribution.text : "")
    + "\nclick for the numbers";
};

/* A gradient norm's colour: one colour per decade on a fixed scale, the same in every picture
   (backtrace.render.labels.norm_colour). */
BT.normColour = function (v, decades, palette) {
  if (!decades || !(v > 0) || !isFinite(v)) { return null; }
  var k = Math.min(palette.length - 1, Math.max(0, Math.floor(Math.log10(v)) - decades.first));
  return {fill: palette[k], ink: k >= palette.length - 3 ? "#fff" : "#111", level: k};
};
