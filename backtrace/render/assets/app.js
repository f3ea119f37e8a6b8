/* backtrace explorer, the page: toolbar, search, side panels, keys, and the two modes (explore,
   replay) over one view. window.backtrace is the running app (tests and the console use it). */
"use strict";
var BT = window.BT = window.BT || {};

BT.App = function (data) {
  this.data = data;
  this.model = new BT.Model(data);
  this.selection = null;
  this.mode = "explore";
  this.depth = data.depth;
  this.panel = "inspect";
  this.timings = {};
  this.build();
  this.view = new BT.View(this.stage, this.model, {
    direction: data.scalar ? "across" : "down", labels: data.scalar, colour: data.colour,
    backward: data.mode === "backward"});
  this.stage.insertBefore(this.view.svg, this.stage.firstChild);
  this.minimap = new BT.Minimap(this.view, this.stage);
  this.replay = new BT.Replay(this);
  this.stage.insertBefore(this.replay.bar, this.view.svg);
  this.bind();
};

BT.App.prototype.build = function () {
  var self = this, d = this.data;
  function tool(id, text, title, go) {
    return BT.h("button", {id: id, type: "button", text: text, title: title, onclick: go});
  }
  this.search = BT.h("input", {id: "search", type: "search", autocomplete: "off", spellcheck: "false",
    placeholder: "Search a node, parameter or module   /", "aria-label": "search by name",
    "aria-controls": "results"});
  this.results = BT.h("ul", {id: "results", role: "listbox", hidden: "hidden"});
  this.tabs = BT.h("nav", {id: "tabs", role: "tablist"});
  this.panelEl = BT.h("div", {id: "panel", role: "tabpanel"});
  this.status = BT.h("div", {id: "status"});
  this.stage = BT.h("div", {id: "stage"}, [BT.legend(d), this.status]);
  this.depthText = BT.h("span", {id: "depth", title: "modules deeper than this are folded"});
  document.body.appendChild(BT.h("header", {}, [
    BT.h("div", {"class": "brand"}, [BT.h("b", {text: "backtrace"}),
      BT.h("span", {"class": "title", text: d.title, title: d.title})]),
    BT.h("div", {"class": "modes"}, [
      tool("mode-explore", "Explore", "fold, unfold, search and inspect", function () {
        self.setMode("explore"); }),
      BT.h("button", {id: "mode-replay", type: "button", text: "Replay",
        disabled: this.canReplay() ? null : "disabled",
        title: this.canReplay() ? "step through the backward pass (r)"
          : "no backward pass to replay in this trace (forward mode)",
        onclick: function () { self.setMode("replay"); }})]),
    BT.h("div", {"class": "search"}, [this.search, this.results]),
    BT.h("div", {"class": "tools"}, [
      BT.h("span", {"class": "depth", hidden: this.model.modules.size ? null : "hidden"}, [
        tool("shallower", "−", "fold one level more ([)", function () { self.refold(-1); }),
        this.depthText,
        tool("deeper", "+", "unfold one level more (])", function () { self.refold(1); })]),
      tool("direction", "Direction", "lay out down or across (d)", function () { self.turn(); }),
      tool("labels", "Wire labels", "values and contributions on the wires (l)", function () {
        self.toggleLabels(); }),
      tool("fit", "Fit", "the whole graph in the window (f)", function () { self.view.fit(); })])]));
  document.body.appendChild(BT.h("main", {}, [this.stage,
    BT.h("aside", {id: "side"}, [this.tabs, this.panelEl])]));
};

/* The colour bar under the graph, with its two ends and what it means. */
BT.legend = function (data) {
  var el = BT.h("div", {id: "legend"});
  if (data.mode !== "backward" || data.colour !== "grad") {
    var kinds = ["input", "op", "const", "output"].concat(data.modules.length ? ["module"] : []);
    kinds.forEach(function (kind) {
      el.appendChild(BT.h("span", {"class": "swatch"}, [
        BT.h("i", {style: "background:" + data.style.kindFill[kind]}), kind]));
    });
    return el;
  }
  var labels = data.style.decades.labels;
  el.appendChild(BT.h("span", {text: "‖gradient‖ " + labels[0]}));
  var bar = BT.h("span", {"class": "ramp"});
  data.style.palette.forEach(function (c, k) {
    bar.appendChild(BT.h("i", {style: "background:" + c, title: labels[k]}));
  });
  el.appendChild(bar);
  el.appendChild(BT.h("span", {text: labels[labels.length - 1] + " · one colour per decade"}));
  el.title = BT.legendText(data);
  return el;
};

BT.App.prototype.start = function () {
  var self = this, t0 = performance.now();
  this.ready = Viz.instance().then(function (viz) {
    self.viz = viz;
    self.timings.engine = performance.now() - t0;
    self.layout(null, "best");
    self.timings.open = performance.now();
    document.body.setAttribute("data-ready", "true");
    if (self.data.start === "replay" || location.hash === "#replay") { self.setMode("replay"); }
  }).catch(function (err) {
    self.stage.appendChild(BT.h("p", {"class": "error", text: "could not lay out the graph: "
      + err}));
    throw err;
  });
  this.renderTabs();
  this.refreshPanels();
};

/* Lay out what is visible. anchor: {id or path, x, y}, a point on screen to keep in place. */
BT.App.prototype.layout = function (anchor, fit) {
  var ms = this.view.render(this.viz), vis = this.view.vis;
  if (fit === "best" && vis.elements.size <= BT.TRY_BOTH) {  // small: the direction that reads larger
    var first = this.view.fitScale(), o = this.view.options, was = o.direction;
    o.direction = was === "down" ? "across" : "down";
    ms += this.view.render(this.viz);
    if (this.view.fitScale() < first * 1.1) { o.direction = was; ms += this.view.render(this.viz); }
  }
  this.timings.layout = ms;
  this.depthText.textContent = "depth " + this.depth;
  this.status.textContent = BT.count(vis.elements.size, "box", "boxes") + " shown of "
    + BT.count(this.data.nodes.length, "node", "nodes")
    + (this.data.hidden ? " (" + this.data.hidden + " hidden)" : "")
    + " · laid out in " + Math.round(ms) + " ms";
  this.mark();
  if (this.mode === "replay") { this.view.frame(this.replay.frame); }
  if (anchor) {
    var box = this.boxOf(anchor.key);
    if (box) { this.view.pin({x: box.x, y: box.y}, anchor.x, anchor.y); }
  } else if (fit) {
    this.view.fit(true);
  }
};

BT.count = function (n, one, many) { return n.toLocaleString("en") + " " + (n === 1 ? one : many); };

BT.TRY_BOTH = 80;  // graphs this small are laid out both ways on opening

BT.App.prototype.boxOf = function (key) {
  var item = this.view.items.get(key) || this.view.clusters.get(key);
  if (!item && key[0] === "[") { item = this.view.clusters.get(key.slice(1, -1)); }
  if (!item && key[0] !== "[") { item = this.view.items.get(BT.boxId(key)); }
  return item ? item.box : null;
};

/* Fold or unfold a module where it stands: its corner stays put on screen. */
BT.App.prototype.toggle = function (path) {
  var open = this.model.foldedAt(path) === null;
  var key = open ? path : BT.boxId(path), box = this.boxOf(key), anchor = null;
  if (box) {
    var p = this.view.toScreen({x: box.x, y: box.y});
    anchor = {key: open ? BT.boxId(path) : path, x: p.x, y: p.y};
  }
  if (open) { this.model.collapse(path); } else { this.model.expand(path); }
  this.layout(anchor);
  this.select({type: "module", id: path});
};

BT.App.prototype.select = function (target) {
  this.selection = target;
  if (target) { this.panel = "inspect"; }
  this.mark();
  this.refreshPanels();
  this.renderTabs();
};

/* Highlight the selection and the wires touching it. */
BT.App.prototype.mark = function () {
  var s = this.selection, ids = [], wires = [];
  if (s) {
    var key = s.type === "node" ? this.model.elementOf(s.id)
      : s.type === "module" ? (this.model.foldedAt(s.id) === s.id ? BT.boxId(s.id) : s.id)
      : s.wire.id;
    ids.push(key);
    if (this.view.vis) {
      this.view.vis.wires.forEach(function (w) {
        if (w.from === key || w.to === key) { wires.push(w.id); }
      });
    }
  }
  this.view.mark("selected", ids);
  this.view.mark("linked", wires);
};

BT.App.prototype.goTo = function (id) {
  if (this.model.reveal(id)) { this.layout(); }
  this.select({type: "node", id: id});
  this.view.show(this.model.elementOf(id), true, 1);
};

BT.App.prototype.goToModule = function (path) {
  if (this.model.revealModule(path)) { this.layout(); }
  this.select({type: "module", id: path});
  var key = this.model.foldedAt(path) === path ? BT.boxId(path) : path;
  var item = this.view.items.get(key) || this.view.clusters.get(key);
  if (item) {
    var r = this.view.svg.getBoundingClientRect(), b = item.box;
    this.view.pin({x: b.x + b.w / 2, y: b.y + Math.min(b.h / 2, 200)}, r.width / 2, r.height / 2);
  }
};

BT.App.prototype.canReplay = function () {
  return this.data.mode === "backward" && this.data.steps.length > 0;
};

BT.App.prototype.setMode = function (mode) {
  if (mode === this.mode || (mode === "replay" && !this.canReplay())) { return; }
  this.mode = mode;
  document.body.classList.toggle("replaying", mode === "replay");
  document.getElementById("mode-explore").setAttribute("aria-pressed", mode === "explore");
  document.getElementById("mode-replay").setAttribute("aria-pressed", mode === "replay");
  if (mode === "replay") { this.replay.enter(); } else { this.replay.leave(); }
};

/* Fold every module at one depth more or less than now (everything is re-folded evenly). */
BT.App.prototype.refold = function (by) {
  var self = this, depths = Array.from(this.model.modules.keys()).map(BT.depthOf);
  this.depth = Math.max(1, Math.min(Math.max.apply(null, [0].concat(depths)) + 1, this.depth + by));
  this.model.foldAt(this.depth);
  var count = this.model.visible().elements.size;
  if (count <= BT.BIG) { this.layout(null, true); return; }
  this.status.textContent = "laying out " + count + " boxes…";  // seconds: say so first
  setTimeout(function () { self.layout(null, true); }, 30);
};

BT.BIG = 300;  // layouts of more boxes than this can take a second or more

BT.App.prototype.turn = function () {
  this.view.options.direction = this.view.options.direction === "down" ? "across" : "down";
  this.layout(null, true);
};

BT.App.prototype.toggleLabels = function () {
  this.view.options.labels = !this.view.options.labels;
  document.getElementById("labels").setAttribute("aria-pressed", this.view.options.labels);
  this.layout(null, true);
};

/* ---------------------------------------------------------------- panels */

BT.App.prototype.renderTabs = function () {
  var self = this;
  this.tabs.textContent = "";
  BT.panels.forEach(function (p) {
    if (p.applies && !p.applies(self)) { return; }
    self.tabs.appendChild(BT.h("button", {type: "button", role: "tab", id: "tab-" + p.id,
      text: p.title, "aria-selected": String(p.id === self.panel),
      onclick: function () { self.panel = p.id; self.renderTabs(); self.refreshPanels(); }}));
  });
};

BT.App.prototype.refreshPanels = function () {
  var self = this, p = BT.panels.filter(function (q) { return q.id === self.panel; })[0];
  this.panelEl.textContent = "";
  this.panelEl.setAttribute("data-panel", this.panel);
  if (p) { p.render(this.panelEl, this); }
};

/* ---------------------------------------------------------------- mouse, keys, search */

BT.App.prototype.bind = function () {
  var self = this, svg = this.view.svg;
  svg.addEventListener("click", function (e) {
    if (self.view.dragged) { self.view.dragged = false; return; }
    var t = e.target, el = t.closest(".element"), head = t.closest(".header");
    var wire = t.closest(".wire");
    if (head) { self.toggle(head.getAttribute("data-path")); }
    else if (el && t.closest(".toggle")) { self.toggle(el.getAttribute("data-id").slice(1, -1)); }
    else if (el) { self.clickElement(el.getAttribute("data-id")); }
    else if (wire) {
      var w = self.view.wires.get(wire.getAttribute("data-wire")).wire;
      self.select({type: "wire", id: w.id, wire: w});
    } else { self.select(null); }
  });
  svg.addEventListener("dblclick", function (e) {
    var el = e.target.closest(".element");
    if (el && el.getAttribute("data-id")[0] === "[") {
      self.toggle(el.getAttribute("data-id").slice(1, -1));
    }
  });
  document.addEventListener("keydown", function (e) { self.key(e); });
  window.addEventListener("resize", function () {  // refit, unless the reader placed the view
    if (self.view.size && !self.view.placed) { self.view.fit(true); }
  });
  this.search.addEventListener("input", function () { self.find(); });
  this.search.addEventListener("keydown", function (e) { self.searchKey(e); });
  this.search.addEventListener("blur", function () {
    setTimeout(function () { self.results.hidden = true; }, 150);
  });
};

BT.App.prototype.clickElement = function (id) {
  if (id[0] === "[") { this.select({type: "module", id: id.slice(1, -1)}); }
  else { this.select({type: "node", id: id}); }
};

BT.App.prototype.key = function (e) {
  if (e.target === this.search || e.ctrlKey || e.metaKey || e.altKey) { return; }
  if (this.mode === "replay" && this.replay.key(e)) { e.preventDefault(); return; }
  var s = this.selection, r = this.view.svg.getBoundingClientRect();
  var keys = {
    "/": function () { this.search.focus(); this.search.select(); },
    "Escape": function () { this.select(null); this.results.hidden = true; },
    "f": function () { this.view.fit(); },
    "+": function () { this.view.zoomAt(1.25, r.width / 2, r.height / 2); },
    "=": function () { this.view.zoomAt(1.25, r.width / 2, r.height / 2); },
    "-": function () { this.view.zoomAt(0.8, r.width / 2, r.height / 2); },
    "r": function () { this.setMode(this.mode === "replay" ? "explore" : "replay"); },
    "d": function () { this.turn(); },
    "l": function () { this.toggleLabels(); },
    "[": function () { this.refold(-1); },
    "]": function () { this.refold(1); },
    "ArrowLeft": function () { this.view.panBy(60, 0); },
    "ArrowRight": function () { this.view.panBy(-60, 0); },
    "ArrowUp": function () { this.view.panBy(0, 60); },
    "ArrowDown": function () { this.view.panBy(0, -60); },
    "Enter": function () { if (s && s.type === "module") { this.toggle(s.id); } },
    "Backspace": function () { this.foldSelection(); }
  };
  if (!(e.key in keys)) { return; }
  e.preventDefault();
  keys[e.key].call(this);
};

/* Fold the module around the selection (a node's module, or a module's parent). */
BT.App.prototype.foldSelection = function () {
  var s = this.selection;
  if (!s || s.type === "wire") { return; }
  var path = s.type === "node" ? this.model.byId.get(s.id).module
    : (this.model.foldedAt(s.id) === s.id ? BT.parentPath(s.id) : s.id);
  if (path) { this.toggle(path); }
};

BT.App.prototype.find = function () {
  var self = this, found = this.model.search(this.search.value, 30);
  this.found = found;
  this.cursor = 0;
  this.results.textContent = "";
  found.forEach(function (r, k) {
    var what = r.kind === "module" ? "module" : (r.node.kind === "op" ? r.node.op : r.node.kind);
    self.results.appendChild(BT.h("li", {role: "option", "data-k": k,
      "aria-selected": String(k === 0), onmousedown: function (e) {
        e.preventDefault(); self.pick(r); }}, [
      BT.h("span", {"class": "name", text: r.text}), BT.h("span", {"class": "what", text: what})]));
  });
  if (this.search.value.trim() && !found.length) {
    this.results.appendChild(BT.h("li", {"class": "none", text: "no node or module by that name"}));
  }
  this.results.hidden = !this.search.value.trim();
};

BT.App.prototype.searchKey = function (e) {
  var n = (this.found || []).length;
  if (e.key === "ArrowDown" || e.key === "ArrowUp") {
    e.preventDefault();
    if (!n) { return; }
    this.cursor = (this.cursor + (e.key === "ArrowDown" ? 1 : n - 1)) % n;
    var cursor = this.cursor;
    this.results.querySelectorAll("li").forEach(function (li, k) {
      li.setAttribute("aria-selected", String(k === cursor));
      if (k === cursor) { li.scrollIntoView({block: "nearest"}); }
    });
  } else if (e.key === "Enter") {
    e.preventDefault();
    if (n) { this.pick(this.found[this.cursor]); }
  } else if (e.key === "Escape") {
    this.search.value = "";
    this.results.hidden = true;
    this.search.blur();
  }
};

BT.App.prototype.pick = function (r) {
  this.results.hidden = true;
  this.search.blur();
  if (r.kind === "module") { this.goToModule(r.id); } else { this.goTo(r.id); }
};

window.addEventListener("DOMContentLoaded", function () {
  var data = JSON.parse(document.getElementById("backtrace-data").textContent);
  window.backtrace = new BT.App(data);
  window.backtrace.start();
});
