/* backtrace explorer, the minimap: the whole graph in a corner with the part in view outlined,
   shown while the graph is larger than the window; click or drag in it to go there. */
"use strict";
var BT = window.BT = window.BT || {};

BT.Minimap = function (view, parent) {
  var self = this;
  this.view = view;
  this.svg = BT.svg("svg", {id: "minimap", "aria-hidden": "true"}, parent);
  BT.svg("rect", {"class": "paper", width: "100%", height: "100%"}, this.svg);
  BT.svg("use", {href: "#content"}, this.svg);
  this.frame = BT.svg("rect", {"class": "view"}, this.svg);
  var dragging = false;
  function go(e) {
    var r = self.svg.getBoundingClientRect(), box = view.svg.getBoundingClientRect();
    var p = {x: (e.clientX - r.left) / self.k, y: (e.clientY - r.top) / self.k};
    view.pin(p, box.width / 2, box.height / 2);
  }
  this.svg.addEventListener("pointerdown", function (e) {
    dragging = true;
    self.svg.setPointerCapture(e.pointerId);
    go(e);
  });
  this.svg.addEventListener("pointermove", function (e) { if (dragging) { go(e); } });
  this.svg.addEventListener("pointerup", function () { dragging = false; });
  view.onmove = function () { self.update(); };
};

BT.Minimap.SIZE = 180;  // the longer side, in pixels

/* Redraw the outline of what is in view; hide the map when everything is. */
BT.Minimap.prototype.update = function () {
  var v = this.view, size = v.size, r = v.svg.getBoundingClientRect();
  if (!size) { return; }
  var at = v.at, x0 = -at.x / at.k, y0 = -at.y / at.k, w = r.width / at.k, h = r.height / at.k;
  var all = x0 <= 0 && y0 <= 0 && x0 + w >= size.w && y0 + h >= size.h;
  this.svg.style.display = all ? "none" : "block";
  if (all) { return; }
  this.k = BT.Minimap.SIZE / Math.max(size.w, size.h);
  this.svg.setAttribute("width", Math.ceil(size.w * this.k));
  this.svg.setAttribute("height", Math.ceil(size.h * this.k));
  this.svg.setAttribute("viewBox", "0 0 " + size.w + " " + size.h);
  var x = Math.max(0, x0), y = Math.max(0, y0);  // clipped to the map, so all four edges show
  this.frame.setAttribute("x", x);
  this.frame.setAttribute("y", y);
  this.frame.setAttribute("width", Math.max(0, Math.min(size.w, x0 + w) - x));
  this.frame.setAttribute("height", Math.max(0, Math.min(size.h, y0 + h) - y));
};
