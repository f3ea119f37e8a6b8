/* backtrace explorer, the graph model: which elements are visible while some modules are folded,
   how the wires between them run, where a name is found, and what the backward pass has sent
   where after k steps. No DOM here; view.js draws what this computes. */
"use strict";
var BT = window.BT = window.BT || {};

BT.parentPath = function (path) {
  var i = path.lastIndexOf(".");
  return i < 0 ? "" : path.slice(0, i);
};
BT.depthOf = function (path) { return path ? path.split(".").length : 0; };
BT.boxId = function (path) { return "[" + path + "]"; };  // as backtrace.fold.box_id

/* The page data leaves out what is empty or repeated (backtrace.render.explorer_data); fill it in. */
BT.NODE_DEFAULTS = {label: "", tag: "", module: "", expr: "", type: "", inputs: [], value: null,
                    grad: null};

BT.Model = function (data) {
  var self = this;
  data.nodes.forEach(function (n) {
    Object.keys(BT.NODE_DEFAULTS).forEach(function (k) {
      if (n[k] === undefined) { n[k] = BT.NODE_DEFAULTS[k]; }
    });
    if (!n.label) { n.label = n.id; }
    if (n.gradText === undefined) { n.gradText = n.grad ? n.grad.text : "—"; }
  });
  this.data = data;
  this.nodes = data.nodes;
  this.byId = new Map(data.nodes.map(function (n) { return [n.id, n]; }));
  this.modules = new Map(data.modules.map(function (m) { return [m.path, m]; }));
  this.children = new Map();  // module path ("" the top) -> its child module paths
  data.modules.forEach(function (m) {
    var parent = BT.parentPath(m.path);
    if (!self.children.has(parent)) { self.children.set(parent, []); }
    self.children.get(parent).push(m.path);
  });
  this.ancestors = new Map();  // node id -> its module paths, shallowest first
  data.nodes.forEach(function (n) {
    var comps = n.module ? n.module.split(".") : [], paths = [];
    for (var k = 1; k <= comps.length; k++) { paths.push(comps.slice(0, k).join(".")); }
    self.ancestors.set(n.id, paths);
  });
  this.stepOf = new Map();  // node id -> index of its backward step
  this.into = new Map();    // node id -> [{step, from, edge}]: every edge sending it gradient
  data.steps.forEach(function (s, k) {
    self.stepOf.set(s.node, k);
    s.edges.forEach(function (e) {
      if (!self.into.has(e.input)) { self.into.set(e.input, []); }
      self.into.get(e.input).push({step: k, from: s.node, edge: e});
    });
  });
  this.consumers = new Map();  // node id -> the ids that read it in the forward pass
  data.nodes.forEach(function (n) {
    n.inputs.forEach(function (i) {
      if (!self.consumers.has(i)) { self.consumers.set(i, []); }
      if (self.consumers.get(i).indexOf(n.id) < 0) { self.consumers.get(i).push(n.id); }
    });
  });
  this.collapsed = new Set();  // folded modules (the shallowest one hides what is inside)
  this.opened = new Set();     // modules the reader unfolded, kept open when a parent re-opens
  this.foldAt(data.depth);
};

BT.Model.prototype.foldAt = function (depth) {
  var self = this;
  this.collapsed.clear();
  this.opened.clear();
  this.modules.forEach(function (m, path) {
    var d = BT.depthOf(path);
    if (d === depth) { self.collapsed.add(path); } else if (d < depth) { self.opened.add(path); }
  });
};

/* The element a node is drawn as: itself, or the box of its shallowest folded module. */
BT.Model.prototype.elementOf = function (id) {
  var paths = this.ancestors.get(id) || [];
  for (var k = 0; k < paths.length; k++) {
    if (this.collapsed.has(paths[k])) { return BT.boxId(paths[k]); }
  }
  return id;
};

/* The folded module hiding a module path (itself included), or null when it is drawn open. */
BT.Model.prototype.foldedAt = function (path) {
  var comps = path.split(".");
  for (var k = 1; k <= comps.length; k++) {
    var p = comps.slice(0, k).join(".");
    if (this.collapsed.has(p)) { return p; }
  }
  return null;
};

/* What is drawn now: elements (nodes and folded boxes), open modules (clusters), wires. Between
   two plain nodes there is one wire per input slot (x * x has two); wires touching a box are
   merged, each keeping the links it stands for. */
BT.Model.prototype.visible = function () {
  var self = this, elements = new Map(), wires = new Map(), clusters = new Set();
  this.nodes.forEach(function (n) {
    var el = self.elementOf(n.id);
    if (elements.has(el)) { return; }
    if (el === n.id) {
      elements.set(el, {id: el, node: n, cluster: n.module});
    } else {
      var path = el.slice(1, -1);
      elements.set(el, {id: el, path: path, module: self.modules.get(path),
                        cluster: BT.parentPath(path)});
    }
  });
  elements.forEach(function (el) {
    for (var p = el.cluster; p; p = BT.parentPath(p)) { clusters.add(p); }
  });
  this.nodes.forEach(function (n) {
    var v = self.elementOf(n.id), seen = new Map();
    n.inputs.forEach(function (i) {
      var u = self.elementOf(i), k = seen.get(i) || 0;
      seen.set(i, k + 1);
      if (u === v) { return; }
      var plain = u === i && v === n.id, key = u + "\u0000" + v + (plain ? "\u0000" + k : "");
      if (!wires.has(key)) { wires.set(key, {id: "w" + wires.size, from: u, to: v, links: []}); }
      wires.get(key).links.push({src: i, dst: n.id, nth: k});
    });
  });
  return {elements: elements, clusters: Array.from(clusters).sort(function (a, b) {
    return BT.depthOf(a) - BT.depthOf(b) || (a < b ? -1 : 1);
  }), wires: Array.from(wires.values())};
};

BT.Model.prototype.expand = function (path) {
  var self = this;
  this.collapsed.delete(path);
  this.opened.add(path);
  (this.children.get(path) || []).forEach(function (c) {
    if (!self.opened.has(c)) { self.collapsed.add(c); }
  });
};

BT.Model.prototype.collapse = function (path) {
  this.collapsed.add(path);
  this.opened.delete(path);
};

/* Unfold every module hiding node `id`; true when anything changed. */
BT.Model.prototype.reveal = function (id) {
  var changed = false, paths = this.ancestors.get(id) || [];
  for (var k = 0; k < paths.length; k++) {
    if (this.collapsed.has(paths[k])) { this.expand(paths[k]); changed = true; }
  }
  return changed;
};

/* Make module `path` visible (as a box, or open if it already was); true when anything changed. */
BT.Model.prototype.revealModule = function (path) {
  var changed = false, comps = path.split(".");
  for (var k = 1; k < comps.length; k++) {
    var p = comps.slice(0, k).join(".");
    if (this.collapsed.has(p)) { this.expand(p); changed = true; }
  }
  return changed;
};

/* The backward edge (upstream × local = contribution) behind a link, or null: the nth edge of
   dst's step that reads src, as the static pictures pair them. */
BT.Model.prototype.edgeOf = function (link) {
  var k = this.stepOf.get(link.dst);
  if (k === undefined) { return null; }
  var same = this.data.steps[k].edges.filter(function (e) { return e.input === link.src; });
  return same[link.nth] || null;
};

/* Nodes and modules whose name matches `query`: exact names first, then prefixes, then whole
   path segments (".linear1"), then any substring; shorter names first within each. */
BT.Model.prototype.search = function (query, limit) {
  var q = query.trim().toLowerCase(), found = [];
  if (!q) { return found; }
  function rank(text) {
    var t = text.toLowerCase();
    if (t === q) { return 0; }
    if (t.indexOf(q) === 0) { return 1; }
    if (("." + t + ".").indexOf("." + q + ".") >= 0 || t.endsWith("." + q)) { return 2; }
    return t.indexOf(q) >= 0 ? 3 : -1;
  }
  this.nodes.forEach(function (n) {
    var names = [n.id, n.label], best = -1, text = n.id;
    names.forEach(function (name) {
      var r = rank(name);
      if (r >= 0 && (best < 0 || r < best)) { best = r; text = name; }
    });
    if (best >= 0) { found.push({kind: "node", id: n.id, text: text, rank: best, node: n}); }
  });
  this.modules.forEach(function (m, path) {
    var r = rank(path);
    if (r >= 0) { found.push({kind: "module", id: path, text: path, rank: r, module: m}); }
  });
  found.sort(function (a, b) {
    return a.rank - b.rank || a.text.length - b.text.length || (a.text < b.text ? -1 : 1);
  });
  return found.slice(0, limit || 30);
};

/* The backward pass after `done` steps: the node whose step ran last, and for each node the
   contributions that have reached it so far. */
BT.Model.prototype.frame = function (done) {
  var steps = this.data.steps, arrived = new Map();
  for (var k = 0; k < done; k++) {
    steps[k].edges.forEach(function (e) {
      arrived.set(e.input, (arrived.get(e.input) || 0) + 1);
    });
  }
  return {done: done, active: done > 0 ? steps[done - 1].node : null, arrived: arrived,
          caption: done > 0 ? steps[done - 1].caption : this.data.seedCaption};
};

/* A node's gradient text in a replay frame (null frame: the whole pass), as the static replay
   writes it (backtrace.render.dot.grad_cell): complete, "(9) + …" while contributions are
   still arriving, or "pending". Returns {text, pending}. */
BT.Model.prototype.gradText = function (n, frame) {
  var all = this.into.get(n.id) || [];
  var none = !n.grad && !all.some(function (c) { return c.edge.contribution; });
  if (none) { return {text: n.gradText, pending: true}; }
  if (!frame || n.id === this.data.output) { return {text: n.gradText, pending: false}; }
  var count = frame.arrived.get(n.id) || 0;
  if (count === all.length) { return {text: n.gradText, pending: false}; }
  return {text: BT.partialSum(all.slice(0, count)), pending: true};
};

BT.partialSum = function (arrived) {
  var parts = arrived.filter(function (c) { return c.edge.contribution; });
  if (!parts.length) { return "pending"; }
  return parts.map(function (c) { return "(" + c.edge.contribution.text + ")"; }).join(" + ")
    + " + …";
};

/* Every text a node's gradient row can show during a replay: the layout sizes boxes for the
   widest, so nothing moves while stepping. */
BT.Model.prototype.gradTexts = function (n) {
  var all = this.into.get(n.id) || [], texts = [n.gradText, "pending"];
  for (var k = 1; k < all.length; k++) { texts.push(BT.partialSum(all.slice(0, k))); }
  return texts;
};
