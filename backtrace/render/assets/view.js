/* backtrace explorer, the drawing: each visible element is measured with the browser's own text
   metrics, Graphviz (WebAssembly) places the boxes of exactly that size, and the page draws the
   SVG itself, so text always fits its box. Pan, zoom, selection and replay looks live here too. */
"use strict";
var BT = window.BT = window.BT || {};
var SVGNS = "http://www.w3.org/2000/svg";

BT.svg = function (tag, attrs, parent) {
  var el = document.createElementNS(SVGNS, tag);
  Object.keys(attrs || {}).forEach(function (k) { el.setAttribute(k, attrs[k]); });
  if (parent) { parent.appendChild(el); }
  return el;
};

BT.View = function (root, model, options) {
  this.root = root;
  this.model = model;
  this.options = options;  // {direction, labels, colour, backward}
  this.measure = new BT.Measure();
  this.svg = BT.svg("svg", {id: "graph", role: "img", "aria-label": "the graph"}, root);
  this.scene = BT.svg("g", {id: "scene"}, this.svg);
  this.content = BT.svg("g", {id: "content"}, this.scene);  // the minimap shows it again
  this.at = {x: 0, y: 0, k: 1};
  this.items = new Map();   // element id -> {g, el, box: {x, y, w, h}, gradText}
  this.clusters = new Map();  // module path -> {g, box}
  this.wires = new Map();   // wire id -> {g, wire, bwd}
  this.bindPanZoom();
};

BT.View.prototype.html = function (w, h) {  // a label of exactly w × h points
  return '<<TABLE BORDER="0" CELLPADDING="0" CELLSPACING="0"><TR><TD FIXEDSIZE="TRUE" WIDTH="'
    + Math.ceil(w) + '" HEIGHT="' + Math.ceil(h) + '"></TD></TR></TABLE>>';
};

/* DOT source of the visible graph: fixed-size empty boxes, clusters with a header of the size of
   their title, wire labels as fixed-size blanks; the page draws every text itself. */
BT.View.prototype.dot = function (vis) {
  var self = this, S = BT.SIZE, o = this.options, lines = [], sizes = new Map();
  lines.push("digraph G {", "graph [rankdir=" + (o.direction === "down" ? "TB" : "LR")
    + ", nodesep=0.25, ranksep=0.4, newrank=true, pad=0.15];",
    'node [shape=box, fixedsize=true, label="", margin=0];', "edge [arrowsize=0.7];");
  var index = new Map(), inCluster = new Map([["", []]]);
  vis.clusters.forEach(function (p) { inCluster.set(p, []); });
  vis.elements.forEach(function (el) {
    var rows = BT.rows(el, self.model, o.backward, el.cluster);
    var w = Math.max.apply(null, rows.map(function (r) { return BT.rowWidth(r, self.measure); }));
    var size = {w: w + 2 * S.pad, h: rows.length * S.line + 2 * S.pad - 2, rows: rows};
    sizes.set(el.id, size);
    index.set(el.id, "n" + index.size);
    inCluster.get(el.cluster).push(index.get(el.id) + " [width=" + (size.w / 72).toFixed(4)
      + ", height=" + (size.h / 72).toFixed(4) + ', id="' + index.get(el.id) + '"];');
  });
  function emit(path, depth) {
    var pad = "  ".repeat(depth);
    inCluster.get(path).forEach(function (line) { lines.push(pad + line); });
    vis.clusters.filter(function (c) { return BT.parentPath(c) === path; }).forEach(function (c) {
      var title = BT.elide(c, 60), w = self.measure.width(title, BT.fonts.bold) + 30;
      lines.push(pad + "subgraph cluster_" + vis.clusters.indexOf(c) + " {",
                 pad + "  graph [label=" + self.html(w, S.header) + ", labeljust=l, margin=10];");
      emit(c, depth + 1);
      lines.push(pad + "}");
    });
  }
  emit("", 1);
  vis.wires.forEach(function (wire) {
    var attrs = 'id="' + wire.id + '"', label = o.labels && BT.wireLabel(wire, self.model, o.backward);
    if (label) {
      var w = Math.max.apply(null, label.map(function (l) {
        return Math.max(self.measure.width(l.text, BT.fonts.small),
                        l.alt ? self.measure.width(l.alt, BT.fonts.small) : 0);
      }));
      wire.label = label;
      attrs += ", label=" + self.html(w + 4, label.length * 13 + 2);
    }
    lines.push(index.get(wire.from) + " -> " + index.get(wire.to) + " [" + attrs + "];");
  });
  lines.push("}");
  return {source: lines.join("\n"), index: index, sizes: sizes};
};

/* Lay the visible graph out and draw it; returns the milliseconds Graphviz took. */
BT.View.prototype.render = function (viz) {
  var vis = this.model.visible(), built = this.dot(vis), t0 = performance.now();
  var out = viz.renderJSON(built.source);
  var ms = performance.now() - t0;
  this.vis = vis;
  this.draw(out, vis, built);
  return ms;
};

BT.pairs = function (text) {
  return text.split(" ").map(function (p) {
    var xy = p.replace(/^[se],/, "").split(",");
    return {x: +xy[0], y: +xy[1], end: p[0] === "e" && p[1] === ",", start: p[0] === "s" && p[1] === ","};
  });
};

BT.View.prototype.draw = function (out, vis, built) {
  var self = this, bb = out.bb.split(",").map(Number), H = bb[3];
  var flip = function (p) { return {x: p.x, y: H - p.y, end: p.end, start: p.start}; };
  this.content.textContent = "";
  this.items.clear();
  this.clusters.clear();
  this.wires.clear();
  this.size = {w: bb[2], h: bb[3]};
  var layers = {clusters: BT.svg("g", {"class": "clusters"}, this.content),
                wires: BT.svg("g", {"class": "wires"}, this.content),
                nodes: BT.svg("g", {"class": "nodes"}, this.content)};
  var byName = new Map();
  (out.objects || []).forEach(function (o) { byName.set(o.name, o); });
  vis.clusters.forEach(function (path, k) {
    var o = byName.get("cluster_" + k), b = o.bb.split(",").map(Number);
    self.drawCluster(layers.clusters, path, {x: b[0], y: H - b[3], w: b[2] - b[0], h: b[3] - b[1]});
  });
  vis.elements.forEach(function (el) {
    var o = byName.get(built.index.get(el.id)), p = flip(BT.pairs(o.pos)[0]);
    var size = built.sizes.get(el.id);
    self.drawElement(layers.nodes, el, size, {x: p.x - size.w / 2, y: p.y - size.h / 2,
                                               w: size.w, h: size.h});
  });
  (out.edges || []).forEach(function (e) {
    var wire = vis.wires[+e.id.slice(1)];
    self.drawWire(layers.wires, wire, BT.pairs(e.pos).map(flip),
                  e.lp ? flip(BT.pairs(e.lp)[0]) : null);
  });
};

BT.View.prototype.fill = function (el) {
  var style = this.model.data.style, o = this.options, n = el.node;
  var grad = n ? n.grad : el.module.gradOut;
  if (o.colour === "grad" && o.backward && grad) {
    var v = Number(grad.norm);
    if (!isFinite(v)) { return {fill: "#e1bee7", ink: "#000", nonfinite: true}; }
    var c = BT.normColour(v, style.decades, style.palette);
    if (c) { return c; }
  }
  var kind = !n ? "module" : n.id === this.model.data.output ? "output" : n.kind;
  return {fill: style.kindFill[kind] || style.kindFill.op, ink: "#111"};
};

BT.View.prototype.drawElement = function (layer, el, size, box) {
  var S = BT.SIZE, n = el.node, look = this.fill(el);
  var kind = !n ? "box" : n.id === this.model.data.output ? "output" : n.kind;
  var g = BT.svg("g", {"class": "element " + kind + (look.nonfinite ? " nonfinite" : ""),
                       "data-id": el.id, transform: "translate(" + box.x + "," + box.y + ")",
                       tabindex: "-1"}, layer);
  var frame = BT.svg("rect", {"class": "frame", width: box.w, height: box.h,
                              rx: kind === "input" || kind === "const" ? 7 : 2,
                              fill: look.fill}, g);
  if (kind === "box") {  // a folded module: stacked like a deck, the depth it hides
    layer.insertBefore(BT.svg("rect", {"class": "deck", x: box.x + 4, y: box.y + 4,
                                       width: box.w, height: box.h}), g);
  }
  var item = {g: g, el: el, box: box, frame: frame, ink: look.ink, gradText: null};
  size.rows.forEach(function (row, k) {
    var y = S.pad + k * S.line + S.font - 1;
    var left = BT.svg("text", {x: S.pad, y: y, "class": "l " + row.cls, fill: look.ink}, g);
    left.textContent = row.left;
    if (row.right) {
      var right = BT.svg("text", {x: box.w - S.pad - (row.expand ? 16 : 0), y: y,
                                   "class": "r " + row.cls,
                                   "text-anchor": "end", fill: look.ink}, g);
      right.textContent = row.right;
      if (row.cls === "grad" && n) { item.gradText = right; }
    }
    if (row.expand) { BT.plus(g, box.w - S.pad - 10, S.pad + 1, true); }
  });
  BT.svg("title", {}, g).textContent = n ? n.id + (n.type ? " (" + n.type + ")" : "")
    : el.path + ": double-click or Enter to unfold";
  this.items.set(el.id, item);
};

/* The unfold (+) or fold (−) mark, drawn as lines so it needs no font. */
BT.plus = function (parent, x, y, plus) {
  var g = BT.svg("g", {"class": "toggle", transform: "translate(" + x + "," + y + ")"}, parent);
  BT.svg("rect", {width: 10, height: 10, rx: 2}, g);
  BT.svg("path", {d: plus ? "M2.5 5H7.5M5 2.5V7.5" : "M2.5 5H7.5"}, g);
  return g;
};

BT.View.prototype.drawCluster = function (layer, path, box) {
  var g = BT.svg("g", {"class": "cluster", "data-path": path}, layer);
  BT.svg("rect", {x: box.x, y: box.y, width: box.w, height: box.h, rx: 6}, g);
  var head = BT.svg("g", {"class": "header", "data-path": path}, g);
  BT.plus(head, box.x + 8, box.y + 6, false);
  var t = BT.svg("text", {x: box.x + 24, y: box.y + 15}, head);
  t.textContent = BT.elide(path, 60);
  BT.svg("title", {}, head).textContent = path + ": click to fold";
  this.clusters.set(path, {g: g, box: box});
};

BT.View.prototype.drawWire = function (layer, wire, pts, lp) {
  var g = BT.svg("g", {"class": "wire", "data-wire": wire.id}, layer);
  var end = pts.filter(function (p) { return p.end; })[0];
  var curve = pts.filter(function (p) { return !p.end && !p.start; });
  var d = "M" + curve[0].x + "," + curve[0].y;
  for (var k = 1; k + 2 < curve.length; k += 3) {
    d += "C" + [curve[k], curve[k + 1], curve[k + 2]].map(function (p) {
      return p.x + "," + p.y;
    }).join(" ");
  }
  BT.svg("path", {"class": "hit", d: d}, g);  // a wide invisible stroke, easy to click
  BT.svg("path", {"class": "line", d: d}, g);
  if (end) {
    var last = curve[curve.length - 1], dx = end.x - last.x, dy = end.y - last.y;
    var len = Math.hypot(dx, dy) || 1, ux = dx / len, uy = dy / len, w = 3.5;
    BT.svg("path", {"class": "head", d: "M" + end.x + "," + end.y + "L" + (last.x - uy * w) + ","
      + (last.y + ux * w) + "L" + (last.x + uy * w) + "," + (last.y - ux * w) + "Z"}, g);
  }
  BT.svg("title", {}, g).textContent = BT.wireTitle(wire, this.model);
  var item = {g: g, wire: wire, bwd: null};
  if (wire.label && lp) {
    var top = lp.y - (wire.label.length * 13) / 2 + 10;
    wire.label.forEach(function (line, k) {
      var t = BT.svg("text", {x: lp.x, y: top + k * 13, "text-anchor": "middle",
                              "class": "label " + line.cls}, g);
      t.textContent = line.text;
      if (line.alt) { item.bwd = {el: t, text: line.text, cls: line.cls}; }
    });
  }
  this.wires.set(wire.id, item);
};

/* ---------------------------------------------------------------- pan and zoom */

/* Every move but a fit marks the view as placed by the reader (a resize then keeps it). */
BT.View.prototype.apply = function (fitted) {
  this.placed = !fitted;
  this.scene.setAttribute("transform", "translate(" + this.at.x + "," + this.at.y + ") scale("
    + this.at.k + ")");
  if (this.onmove) { this.onmove(); }
};

BT.View.prototype.panBy = function (dx, dy) {
  this.at.x += dx;
  this.at.y += dy;
  this.apply();
};

BT.View.prototype.zoomAt = function (factor, cx, cy) {
  var k = Math.min(4, Math.max(0.05, this.at.k * factor));
  this.at.x = cx - (cx - this.at.x) * k / this.at.k;
  this.at.y = cy - (cy - this.at.y) * k / this.at.k;
  this.at.k = k;
  this.apply();
};

/* Show the whole graph (at most 1.5×). With `readable`, a graph that would shrink below 0.85×
   is shown at 1× from its top instead, so its text can be read; scroll or press f for all. */
BT.View.prototype.fit = function (readable) {
  var r = this.svg.getBoundingClientRect(), m = 24, k = this.fitScale();
  if (readable && k < 0.85) { k = 1; }
  this.at.k = k;
  this.at.x = Math.max(m, (r.width - this.size.w * k) / 2);
  this.at.y = Math.max(m, (r.height - this.size.h * k) / 2);
  this.apply(true);
};

BT.View.prototype.fitScale = function () {
  var r = this.svg.getBoundingClientRect(), m = 24;
  return Math.min((r.width - 2 * m) / this.size.w, (r.height - 2 * m) / this.size.h, 1.5);
};

/* Move so that a point of the scene lands at screen point (sx, sy). */
BT.View.prototype.pin = function (p, sx, sy) {
  this.at.x = sx - p.x * this.at.k;
  this.at.y = sy - p.y * this.at.k;
  this.apply();
};

BT.View.prototype.toScreen = function (p) {
  return {x: this.at.x + p.x * this.at.k, y: this.at.y + p.y * this.at.k};
};

/* Bring an element into view, centred, unless it is well inside already (always: centre it);
   zoom in to `least` when the view is smaller, so its text can be read. */
BT.View.prototype.show = function (id, always, least) {
  var item = this.items.get(id), r = this.svg.getBoundingClientRect();
  if (!item) { return; }
  var b = item.box, a = this.toScreen({x: b.x, y: b.y});
  var inside = a.x > 20 && a.y > 20 && a.x + b.w * this.at.k < r.width - 20
    && a.y + b.h * this.at.k < r.height - 20;
  if (always || !inside) {
    this.at.k = Math.max(this.at.k, least || 0.6);
    this.pin({x: b.x + b.w / 2, y: b.y + b.h / 2}, r.width / 2, r.height / 2);
  }
};

BT.View.prototype.bindPanZoom = function () {
  var self = this, drag = null;
  this.svg.addEventListener("wheel", function (e) {  // scroll pans; ctrl + wheel (pinch) zooms
    e.preventDefault();
    var r = self.svg.getBoundingClientRect(), unit = e.deltaMode ? 30 : 1;
    if (e.ctrlKey || e.metaKey) {
      self.zoomAt(Math.exp(-e.deltaY * unit * 0.004), e.clientX - r.left, e.clientY - r.top);
    } else {
      self.at.x -= (e.shiftKey && !e.deltaX ? e.deltaY : e.deltaX) * unit;
      self.at.y -= (e.shiftKey && !e.deltaX ? 0 : e.deltaY) * unit;
      self.apply();
    }
  }, {passive: false});
  this.svg.addEventListener("pointerdown", function (e) {
    if (e.button !== 0) { return; }
    drag = {x: e.clientX, y: e.clientY, ax: self.at.x, ay: self.at.y, moved: false};
  });
  window.addEventListener("pointermove", function (e) {
    if (!drag) { return; }
    var dx = e.clientX - drag.x, dy = e.clientY - drag.y;
    if (!drag.moved && Math.hypot(dx, dy) < 4) { return; }
    if (!drag.moved) { self.svg.classList.add("panning"); }
    drag.moved = true;
    self.at.x = drag.ax + dx;
    self.at.y = drag.ay + dy;
    self.apply();
  });
  window.addEventListener("pointerup", function () {
    self.svg.classList.remove("panning");
    self.dragged = drag && drag.moved;
    drag = null;
  });
};

/* ---------------------------------------------------------------- looks */

BT.View.prototype.mark = function (cls, ids) {
  this.svg.querySelectorAll("." + cls).forEach(function (e) { e.classList.remove(cls); });
  var self = this;
  (ids || []).forEach(function (id) {
    var item = self.items.get(id) || self.wires.get(id) || self.clusters.get(id);
    if (item) { item.g.classList.add(cls); }
  });
};

/* Show a replay frame (null: the whole pass): texts and looks change, nothing moves. */
BT.View.prototype.frame = function (frame) {
  var self = this, model = this.model, active = frame && frame.active;
  var activeEl = active ? model.elementOf(active) : null;
  this.items.forEach(function (item, id) {
    item.g.classList.toggle("active", id === activeEl);
    var pending = false;
    if (item.el.node && self.options.backward) {
      var g = model.gradText(item.el.node, frame);
      if (item.gradText) { item.gradText.textContent = BT.elide(g.text, BT.SIZE.maxText); }
      pending = frame !== null && g.pending;
    } else if (frame && item.el.path) {  // a box is pending until a step inside it has run
      pending = !BT.anyDone(model, item.el.path, frame.done);
    }
    item.g.classList.toggle("pending", pending);
  });
  this.wires.forEach(function (item) {
    var dst = item.wire.links[0].dst, k = model.stepOf.get(dst);
    var done = !frame || (k !== undefined && k < frame.done);
    item.g.classList.toggle("active", !!activeEl && item.wire.to === activeEl
                            && model.elementOf(active) === item.wire.to
                            && item.wire.links.some(function (l) { return l.dst === active; }));
    if (item.bwd) {
      item.bwd.el.textContent = done ? item.bwd.text : "pending";
      item.bwd.el.setAttribute("class", "label " + (done ? item.bwd.cls : "bwd none"));
    }
  });
};

BT.anyDone = function (model, path, done) {
  var steps = model.data.steps;
  for (var k = 0; k < done; k++) {
    var id = steps[k].node, paths = model.ancestors.get(id) || [];
    if (paths.indexOf(path) >= 0) { return true; }
  }
  return false;
};
