/* backtrace explorer, the replay mode: the backward pass one step at a time on the same layout
   (nothing moves). The node whose step runs is highlighted, gradients fill in as they arrive
   ("(9) + …" until every consumer has sent its part), pending ones are grey. */
"use strict";
var BT = window.BT = window.BT || {};

BT.ICONS = {  // drawn, so they need no font (the media-control glyphs are missing from many)
  first: "M3 2.5h1.6v9H3zM12 2.5v9L5.5 7z",
  prev: "M10.5 2.5v9L4 7z",
  next: "M4 2.5v9L10.5 7z",
  last: "M9.4 2.5H11v9H9.4zM2 2.5v9L8.5 7z"
};

BT.icon = function (name) {
  var svg = BT.svg("svg", {width: 14, height: 14, viewBox: "0 0 14 14", "aria-hidden": "true"});
  BT.svg("path", {d: BT.ICONS[name]}, svg);
  return svg;
};

BT.Replay = function (app) {
  var self = this;
  this.app = app;
  this.done = 0;
  this.total = app.data.steps.length;
  function button(id, text, title, iconFirst) {
    var b = BT.h("button", {id: id, type: "button", title: title,
                            onclick: function () { self.go(id); }});
    var label = BT.h("span", {text: text});
    if (iconFirst) { b.appendChild(BT.icon(id)); b.appendChild(label); }
    else { b.appendChild(label); b.appendChild(BT.icon(id)); }
    return b;
  }
  this.counter = BT.h("span", {id: "counter", "aria-live": "polite"});
  this.caption = BT.h("p", {id: "caption"});
  this.bar = BT.h("div", {id: "replay", "class": "replay", hidden: "hidden"}, [
    BT.h("div", {"class": "controls"}, [
      button("first", "first", "the seed, before any step (Home)", true),
      button("prev", "previous", "previous step (← or ↑)", true),
      this.counter,
      button("next", "next", "next step (→, ↓ or space)", false),
      button("last", "last", "the last step (End)", false)]),
    this.caption]);
};

BT.Replay.prototype.go = function (where) {
  var to = {first: 0, prev: this.done - 1, next: this.done + 1, last: this.total}[where];
  this.show(to === undefined ? where : to);
};

BT.Replay.prototype.show = function (k) {
  this.done = Math.max(0, Math.min(this.total, k));
  var frame = this.app.model.frame(this.done);
  this.frame = frame;
  this.app.view.frame(frame);
  this.counter.textContent = "step " + this.done + " of " + this.total;
  this.caption.textContent = frame.caption;
  ["first", "prev"].forEach(function (id) {
    document.getElementById(id).disabled = this.done === 0;
  }, this);
  ["next", "last"].forEach(function (id) {
    document.getElementById(id).disabled = this.done === this.total;
  }, this);
  if (frame.active) {  // the inspector follows the step that runs
    this.app.select({type: "node", id: frame.active});
    this.app.view.show(this.app.model.elementOf(frame.active));
  } else {
    this.app.refreshPanels();
  }
};

BT.Replay.prototype.enter = function () {
  this.bar.hidden = false;
  this.show(this.done);
};

BT.Replay.prototype.leave = function () {
  this.bar.hidden = true;
  this.frame = null;
  this.app.view.frame(null);
};

/* Keys while replaying; true when the key was one of them. */
BT.Replay.prototype.key = function (e) {
  var moves = {ArrowRight: "next", ArrowDown: "next", " ": "next", ArrowLeft: "prev",
               ArrowUp: "prev", Home: "first", End: "last", PageDown: "next", PageUp: "prev"};
  if (!(e.key in moves)) { return false; }
  this.go(moves[e.key]);
  return true;
};
