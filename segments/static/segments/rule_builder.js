/* Visual rule builder: edits the rule JSON of the hidden textarea as a tree of groups and conditions and shows a
   live preview count. No dependencies. The JSON is the rule language of the README. */
(function () {
  "use strict";
  var GROUPS = ["all", "any"];
  var NO_VALUE = ["is_null", "is_not_null"];

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") { node.textContent = attrs[k]; } else { node.setAttribute(k, attrs[k]); }
    });
    (children || []).forEach(function (c) { node.appendChild(c); });
    return node;
  }

  function select(options, value, cls) {
    var s = el("select", {"class": cls});
    options.forEach(function (o) {
      var opt = el("option", {value: o[0], text: o[1]});
      if (o[0] === value) { opt.selected = true; }
      s.appendChild(opt);
    });
    return s;
  }

  // --- the model: groups {type: "group", mode, negate, children} and conditions {type: "condition", ...} ---
  function fromRule(rule) {
    if (!rule || typeof rule !== "object") { return {type: "group", mode: "all", negate: false, children: []}; }
    if (rule.not) {
      var inner = fromRule(rule.not);
      if (inner.type === "group" && !inner.negate) { inner.negate = true; return inner; }
      return {type: "group", mode: "all", negate: true, children: [inner]};
    }
    for (var i = 0; i < GROUPS.length; i++) {
      if (rule[GROUPS[i]]) {
        return {type: "group", mode: GROUPS[i], negate: false, children: rule[GROUPS[i]].map(fromRule)};
      }
    }
    if ("tag" in rule) { return {type: "condition", kind: "tag", tag: rule.tag}; }
    if ("segment" in rule) { return {type: "condition", kind: "segment", segment: rule.segment}; }
    return {type: "condition", kind: "field", field: rule.field, op: rule.op, value: rule.value};
  }

  function toRule(node) {
    if (node.type === "group") {
      var body = {};
      body[node.mode] = node.children.map(toRule);
      return node.negate ? {not: body} : body;
    }
    if (node.kind === "tag") { return {tag: node.tag}; }
    if (node.kind === "segment") { return {segment: node.segment}; }
    var leaf = {field: node.field, op: node.op};
    if (NO_VALUE.indexOf(node.op) < 0) { leaf.value = node.value; }
    return leaf;
  }

  function Builder(root) {
    this.root = root;
    this.catalogue = JSON.parse(root.dataset.catalogue);
    this.fields = {};
    var self = this;
    this.catalogue.fields.forEach(function (f) { self.fields[f.name] = f; });
    this.textarea = root.querySelector("textarea");
    this.tree = root.querySelector(".rule-builder-tree");
    this.preview = root.querySelector(".rule-builder-preview");
    var initial = null;
    try { initial = JSON.parse(this.textarea.value || "null"); } catch (e) { initial = null; }
    this.model = fromRule(initial);
    if (this.model.type !== "group") { this.model = {type: "group", mode: "all", negate: false, children: [this.model]}; }
    this.timer = null;
    this.render();
  }

  Builder.prototype.changed = function () {
    this.textarea.value = this.model.children.length ? JSON.stringify(toRule(this.model)) : "";
    this.render();
    var self = this;
    clearTimeout(this.timer);
    this.timer = setTimeout(function () { self.runPreview(); }, 300);
  };

  Builder.prototype.newCondition = function () {
    var first = this.catalogue.fields[0];
    return {type: "condition", kind: "field", field: first.name, op: first.ops[0], value: ""};
  };

  Builder.prototype.render = function () {
    this.tree.innerHTML = "";
    this.tree.appendChild(this.renderGroup(this.model, null, "rule"));
  };

  Builder.prototype.renderGroup = function (group, parent, path) {
    var self = this;
    var box = el("div", {"class": "rb-group", "data-path": path});
    var mode = select([["all", "all of"], ["any", "any of"]], group.mode, "rb-mode");
    mode.addEventListener("change", function () { group.mode = mode.value; self.changed(); });
    var negate = el("input", {type: "checkbox", "class": "rb-negate"});
    negate.checked = group.negate;
    negate.addEventListener("change", function () { group.negate = negate.checked; self.changed(); });
    var header = el("div", {"class": "rb-header"}, [el("label", {}, [negate, document.createTextNode(" not ")]), mode]);
    var addCondition = el("button", {type: "button", "class": "rb-add-condition", text: "+ condition"});
    addCondition.addEventListener("click", function () { group.children.push(self.newCondition()); self.changed(); });
    var addGroup = el("button", {type: "button", "class": "rb-add-group", text: "+ group"});
    addGroup.addEventListener("click", function () {
      group.children.push({type: "group", mode: "any", negate: false, children: [self.newCondition()]});
      self.changed();
    });
    header.appendChild(addCondition);
    header.appendChild(addGroup);
    if (parent) { header.appendChild(this.removeButton(parent, group)); }
    box.appendChild(header);
    var list = el("div", {"class": "rb-children"});
    group.children.forEach(function (child, i) {
      var childPath = path === "rule" ? group.mode + "[" + i + "]" : path + "." + group.mode + "[" + i + "]";
      list.appendChild(child.type === "group" ? self.renderGroup(child, group, childPath)
        : self.renderCondition(child, group, childPath));
    });
    box.appendChild(list);
    return box;
  };

  Builder.prototype.removeButton = function (parent, node) {
    var self = this;
    var button = el("button", {type: "button", "class": "rb-remove", title: "remove", text: "×"});
    button.addEventListener("click", function () {
      parent.children.splice(parent.children.indexOf(node), 1);
      self.changed();
    });
    return button;
  };

  Builder.prototype.renderCondition = function (cond, parent, path) {
    var self = this;
    var row = el("div", {"class": "rb-condition", "data-path": path});
    var kind = select([["field", "field"], ["tag", "has tag"], ["segment", "in segment"]], cond.kind, "rb-kind");
    kind.addEventListener("change", function () {
      var fresh = kind.value === "field" ? self.newCondition()
        : kind.value === "tag" ? {type: "condition", kind: "tag", tag: self.catalogue.tags[0] || ""}
        : {type: "condition", kind: "segment", segment: self.catalogue.segments[0] || ""};
      parent.children[parent.children.indexOf(cond)] = fresh;
      self.changed();
    });
    row.appendChild(kind);
    if (cond.kind === "tag" || cond.kind === "segment") {
      var names = cond.kind === "tag" ? this.catalogue.tags : this.catalogue.segments;
      var pick = select(names.map(function (n) { return [n, n]; }), cond[cond.kind], "rb-ref");
      pick.addEventListener("change", function () { cond[cond.kind] = pick.value; self.changed(); });
      row.appendChild(pick);
    } else {
      this.renderFieldCondition(cond, row);
    }
    row.appendChild(this.removeButton(parent, cond));
    return row;
  };

  Builder.prototype.renderFieldCondition = function (cond, row) {
    var self = this;
    var field = this.fields[cond.field] || this.catalogue.fields[0];
    var fieldSelect = select(this.catalogue.fields.map(function (f) { return [f.name, f.label]; }), field.name, "rb-field");
    fieldSelect.addEventListener("change", function () {
      cond.field = fieldSelect.value;
      var ops = self.fields[cond.field].ops;
      if (ops.indexOf(cond.op) < 0) { cond.op = ops[0]; }
      cond.value = "";
      self.changed();
    });
    var op = select(field.ops.map(function (o) { return [o, o.replace(/_/g, " ")]; }), cond.op, "rb-op");
    op.addEventListener("change", function () {
      cond.op = op.value;
      cond.value = (cond.op === "between") ? ["", ""] : "";
      self.changed();
    });
    row.appendChild(fieldSelect);
    row.appendChild(op);
    if (NO_VALUE.indexOf(cond.op) >= 0) { return; }
    if (cond.op === "between") {
      var pair = Array.isArray(cond.value) ? cond.value : ["", ""];
      [0, 1].forEach(function (i) {
        row.appendChild(self.valueInput(field, pair[i], function (v) { pair[i] = v; cond.value = pair; }));
      });
    } else if (cond.op === "in" || cond.op === "not_in") {
      var list = Array.isArray(cond.value) ? cond.value : [];
      var input = el("input", {type: "text", "class": "rb-value", placeholder: "comma-separated"});
      input.value = list.join(", ");
      input.addEventListener("change", function () {
        cond.value = input.value.split(",").map(function (v) { return v.trim(); }).filter(Boolean)
          .map(function (v) { return field.type === "number" ? Number(v) : v; });
        self.changed();
      });
      row.appendChild(input);
    } else {
      row.appendChild(this.valueInput(field, cond.value, function (v) { cond.value = v; }));
    }
  };

  // A value box; dates also take "30 days ago" / "60 years ago", stored as {"days_ago": 30} / {"years_ago": 60}.
  Builder.prototype.valueInput = function (field, value, set) {
    var self = this;
    var input;
    if (field.type === "choice") {
      input = select([["", "—"]].concat(field.choices.map(function (c) { return [c, c]; })), value, "rb-value");
    } else {
      input = el("input", {type: "text", "class": "rb-value"});
      if (value && typeof value === "object") {
        input.value = value.days_ago !== undefined ? value.days_ago + " days ago" : value.years_ago + " years ago";
      } else {
        input.value = value === undefined || value === null ? "" : value;
      }
      if (field.examples.length) { input.placeholder = "e.g. " + JSON.stringify(field.examples[0]); }
    }
    input.addEventListener("change", function () {
      var raw = input.value.trim();
      var relative = /^(-?\d+)\s*(day|year)s?\s+ago$/i.exec(raw);
      if ((field.type === "date" || field.type === "datetime") && relative) {
        var v = {};
        v[relative[2].toLowerCase() + "s_ago"] = parseInt(relative[1], 10);
        set(v);
      } else if (field.type === "number" && raw !== "" && !isNaN(Number(raw))) {
        set(Number(raw));
      } else {
        set(raw);
      }
      self.changed();
    });
    return input;
  };

  Builder.prototype.runPreview = function () {
    var self = this;
    var url = this.root.dataset.previewUrl;
    if (!url) { return; }
    if (!this.model.children.length) { this.preview.textContent = "Add a condition to see who matches."; return; }
    var csrf = document.querySelector("input[name=csrfmiddlewaretoken]");
    var slug = document.getElementById("id_slug");
    this.preview.textContent = "counting…";
    fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRFToken": csrf ? csrf.value : ""},
      body: JSON.stringify({rule: toRule(this.model), segment: this.root.dataset.segment || null,
                            slug: slug ? slug.value : null})
    }).then(function (r) { return r.json(); }).then(function (data) {
      self.tree.querySelectorAll(".rb-error").forEach(function (n) { n.classList.remove("rb-error"); });
      if (data.error) {
        self.preview.className = "rule-builder-preview rb-invalid";
        self.preview.textContent = data.path + ": " + data.error;
        var bad = self.tree.querySelector('[data-path="' + data.path.replace(/\.(value|op|field|tag|segment)(\[\d+\])?$/, "") + '"]');
        if (bad) { bad.classList.add("rb-error"); }
        return;
      }
      self.preview.className = "rule-builder-preview";
      var text = "Matches " + data.count + " profiles";
      if (data.diff) { text += " (would enter " + data.diff.would_enter + ", would leave " + data.diff.would_leave + ")"; }
      self.preview.textContent = text;
      var ul = el("ul", {"class": "rb-sample"});
      data.sample.forEach(function (p) { ul.appendChild(el("li", {text: p.public_id + " " + p.name + " " + p.city})); });
      self.preview.appendChild(ul);
    }).catch(function () { self.preview.textContent = "preview unavailable"; });
  };

  function start() {
    document.querySelectorAll(".rule-builder").forEach(function (root) {
      var builder = new Builder(root);
      builder.runPreview();
    });
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); } else { start(); }
}());
