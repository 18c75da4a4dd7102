/* Visual rule builder: edits the rule JSON of the form's textarea as a tree of groups and conditions (fields, tags,
   segments, activity) and shows a live preview count. No dependencies. The JSON is the rule language of the README.

   Opening and saving never changes a rule behind the user's back: the textarea is only rewritten after an edit, every
   number keeps the text it was written with, and a node the builder cannot show exactly is kept as read-only JSON. */
(function () {
  "use strict";
  var NO_VALUE = ["is_null", "is_not_null"];
  var LIST_OPS = ["in", "not_in"];
  var OP_LABELS = {eq: "=", ne: "≠", lt: "<", lte: "≤", gt: ">", gte: "≥", between: "between", "in": "is one of",
                   not_in: "is none of", contains: "contains", startswith: "starts with", is_null: "is empty",
                   is_not_null: "has a value"};
  var AGG_LABELS = {count: "number of rows", sum: "sum of", avg: "average of", min: "minimum of", max: "maximum of"};
  var JSON_NUMBER = /^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?$/;

  // --- JSON whose numbers keep their text ----------------------------------------------------------------------
  // A JavaScript number cannot hold every JSON number (12345678901234567890, or 5000.0 against 5000): such a
  // number is kept as a RawNumber and written back exactly as it came.
  function RawNumber(text) { this.text = text; }

  function number(text) {
    var n = Number(text);
    return JSON_NUMBER.test(text) && JSON.stringify(n) === text ? n : new RawNumber(text);
  }

  function parseJson(text) {
    var at = 0;
    var string = /"(?:[^"\\\u0000-\u001f]|\\(?:["\\\/bfnrt]|u[0-9a-fA-F]{4}))*"/.source;
    var numeral = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?|-?Infinity|NaN/.source;  // Python writes NaN, Infinity
    var token = new RegExp("\\s*(?:([{}[\\],:])|(" + string + ")|(" + numeral + ")|(true|false|null))", "y");
    function next() {
      token.lastIndex = at;
      var m = token.exec(text);
      if (!m) { throw new SyntaxError("not JSON at character " + at); }
      at = token.lastIndex;
      return m;
    }
    function expect(punct) {
      if (next()[1] !== punct) { throw new SyntaxError("expected " + punct + " before " + at); }
    }
    function value(m) {
      if (m[2]) { return JSON.parse(m[2]); }
      if (m[3]) { return number(m[3]); }
      if (m[4]) { return JSON.parse(m[4]); }
      var items, key;
      if (m[1] === "[") {
        items = [];
        m = next();
        if (m[1] === "]") { return items; }
        for (;;) {
          items.push(value(m));
          m = next();
          if (m[1] === "]") { return items; }
          if (m[1] !== ",") { throw new SyntaxError("expected , or ] before " + at); }
          m = next();
        }
      }
      if (m[1] === "{") {
        items = {};
        m = next();
        if (m[1] === "}") { return items; }
        for (;;) {
          if (!m[2]) { throw new SyntaxError("expected a key before " + at); }
          key = JSON.parse(m[2]);
          expect(":");
          // defineProperty: a key "__proto__" is a key like any other
          Object.defineProperty(items, key, {value: value(next()), enumerable: true, writable: true,
                                             configurable: true});
          m = next();
          if (m[1] === "}") { return items; }
          if (m[1] !== ",") { throw new SyntaxError("expected , or } before " + at); }
          m = next();
        }
      }
      throw new SyntaxError("unexpected " + m[0] + " before " + at);
    }
    var result = value(next());
    if (/\S/.test(text.slice(at))) { throw new SyntaxError("text after the JSON at character " + at); }
    return result;
  }

  function stringify(v) {
    if (v instanceof RawNumber) { return v.text; }
    if (Array.isArray(v)) { return "[" + v.map(stringify).join(", ") + "]"; }
    if (v !== null && typeof v === "object") {
      return "{" + Object.keys(v).map(function (k) { return JSON.stringify(k) + ": " + stringify(v[k]); })
        .join(", ") + "}";
    }
    return JSON.stringify(v);
  }

  function isObject(v) { return v !== null && typeof v === "object" && !Array.isArray(v) && !(v instanceof RawNumber); }
  function has(o, k) { return Object.prototype.hasOwnProperty.call(o, k); }
  function isNumber(v) { return typeof v === "number" || v instanceof RawNumber; }

  // The same JSON, key order aside (PostgreSQL's jsonb does not keep it either).
  function same(a, b) {
    if (a instanceof RawNumber || b instanceof RawNumber) {
      return a instanceof RawNumber && b instanceof RawNumber && a.text === b.text;
    }
    if (Array.isArray(a) || Array.isArray(b)) {
      return Array.isArray(a) && Array.isArray(b) && a.length === b.length &&
        a.every(function (x, i) { return same(x, b[i]); });
    }
    if (isObject(a) || isObject(b)) {
      var keys = Object.keys(a || {});
      return isObject(a) && isObject(b) && keys.length === Object.keys(b).length &&
        keys.every(function (k) { return has(b, k) && same(a[k], b[k]); });
    }
    return a === b;
  }

  // What a user typed in a number box: a JSON number as written, anything else as text (the preview names it).
  function typedNumber(raw) { return JSON_NUMBER.test(raw) ? number(raw) : raw; }
  function numberText(v) { return v instanceof RawNumber ? v.text : (v === undefined || v === null ? "" : String(v)); }

  function relativeUnit(v) {
    if (!isObject(v)) { return null; }
    var keys = Object.keys(v);
    var unit = keys.length === 1 && (keys[0] === "days_ago" || keys[0] === "years_ago") ? keys[0] : null;
    return unit && isNumber(v[unit]) ? unit : null;
  }

  function join(path, part) { return path && part.charAt(0) !== "[" ? path + "." + part : path + part; }

  // --- DOM helpers ------------------------------------------------------------------------------------------------
  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") { node.textContent = attrs[k]; } else { node.setAttribute(k, attrs[k]); }
    });
    (children || []).forEach(function (c) {
      node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return node;
  }

  function select(options, value, cls, label) {
    var s = el("select", {"class": cls, "aria-label": label || cls.replace(/^rb-/, "")});
    options.forEach(function (o) {
      var opt = el("option", {value: o[0], text: o[1]});
      if (o[0] === value) { opt.selected = true; }
      s.appendChild(opt);
    });
    return s;
  }

  function textInput(value, cls, label, placeholder) {
    var input = el("input", {type: "text", "class": cls, "aria-label": label});
    input.value = value;
    if (placeholder) { input.placeholder = placeholder; }
    return input;
  }

  // --- the builder ------------------------------------------------------------------------------------------------
  // Model nodes: {type: "group", mode, negate, children, implicit}, {type: "field", negate, field, op, value},
  // {type: "tag" | "segment", negate, ref}, {type: "activity", negate, kind, where, keepWhere, within, agg, field,
  // op, value, exists} and {type: "raw", rule} for what the builder cannot show exactly.
  function Builder(root) {
    var self = this;
    this.root = root;
    this.catalogue = JSON.parse(root.dataset.catalogue);
    this.fields = {};
    this.catalogue.fields.forEach(function (f) { self.fields[f.name] = f; });
    this.activityFields = {};
    Object.keys(this.catalogue.activity).forEach(function (kind) {
      var byName = {};
      self.catalogue.activity[kind].forEach(function (f) { byName[f.name] = f; });
      self.activityFields[kind] = byName;
    });
    this.textarea = root.querySelector("textarea");
    this.tree = root.querySelector(".rule-builder-tree");
    this.preview = root.querySelector(".rule-builder-preview");
    this.timer = null;
    this.load(this.textarea.value);
    // Edits of the JSON itself are taken back into the builder (the way to change a node shown as JSON).
    this.textarea.addEventListener("change", function () {
      if (self.load(self.textarea.value)) { self.schedulePreview(); }
    });
  }

  Builder.prototype.load = function (text) {
    var rule = null;
    try {
      rule = text.trim() ? parseJson(text) : null;
    } catch (e) {
      // Nothing to show: the builder waits for the JSON to be fixed rather than replace it.
      this.model = null;
      this.tree.textContent = "";
      this.preview.className = "rule-builder-preview rb-invalid";
      this.preview.textContent = "The JSON below is not valid (" + e.message + "); fix it there.";
      return false;
    }
    if (rule === null) {
      this.model = {type: "group", mode: "all", negate: false, children: [], implicit: true};
    } else {
      var node = this.fromRule(rule, this.fields);
      this.model = node.type === "group" ? node
        : {type: "group", mode: "all", negate: false, children: [node], implicit: true};
    }
    this.render();
    return true;
  };

  Builder.prototype.rule = function () {
    return this.model && this.model.children.length ? toRule(this.model) : null;
  };

  // The model of a rule node, or a read-only "raw" node when the builder could not give the node back exactly.
  Builder.prototype.fromRule = function (rule, fields) {
    var node = null;
    try { node = this.readNode(rule, fields); } catch (e) { node = null; }
    return node && same(toRule(node), rule) ? node : {type: "raw", negate: false, rule: rule};
  };

  Builder.prototype.readNode = function (rule, fields) {
    if (!isObject(rule)) { return null; }
    if (has(rule, "field")) { return this.readField(rule, fields); }
    var keys = Object.keys(rule);
    if (keys.length !== 1 || fields !== this.fields) { return null; }
    var key = keys[0], body = rule[key], self = this;
    if (key === "all" || key === "any") {
      if (!Array.isArray(body) || !body.length) { return null; }
      return {type: "group", mode: key, negate: false, implicit: false,
              children: body.map(function (child) { return self.fromRule(child, fields); })};
    }
    if (key === "not") {
      var inner = this.fromRule(body, fields);
      if (inner.type === "raw" || inner.negate) { return null; }
      inner.negate = true;
      return inner;
    }
    if (key === "tag" || key === "segment") {
      return typeof body === "string" ? {type: key, negate: false, ref: body} : null;
    }
    if (key === "activity") { return this.readActivity(body); }
    return null;
  };

  Builder.prototype.readField = function (rule, fields) {
    var field = typeof rule.field === "string" && has(fields, rule.field) ? fields[rule.field] : null;
    var extra = Object.keys(rule).filter(function (k) { return ["field", "op", "value"].indexOf(k) < 0; });
    if (!field || extra.length || field.ops.indexOf(rule.op) < 0) { return null; }
    var showable = NO_VALUE.indexOf(rule.op) >= 0 ? !has(rule, "value")
      : has(rule, "value") && shows(field, rule.op, rule.value);
    if (!showable) { return null; }
    return {type: "field", negate: false, field: field.name, op: rule.op, value: rule.value};
  };

  var NUMBER_FIELD = {type: "number", choices: [], examples: []};

  Builder.prototype.readActivity = function (body) {
    var self = this;
    if (!isObject(body) || typeof body.kind !== "string" || !has(this.activityFields, body.kind)) { return null; }
    var known = ["kind", "where", "within_days", "agg", "field", "op", "value", "exists"];
    if (Object.keys(body).some(function (k) { return known.indexOf(k) < 0; })) { return null; }
    if (has(body, "where") && !Array.isArray(body.where)) { return null; }
    if (has(body, "within_days") && !isNumber(body.within_days)) { return null; }
    var fields = this.activityFields[body.kind];
    var node = {type: "activity", negate: false, kind: body.kind, keepWhere: has(body, "where"),
                where: (body.where || []).map(function (leaf) { return self.fromRule(leaf, fields); }),
                within: body.within_days};
    if (has(body, "agg")) {
      if (has(body, "exists") || this.catalogue.aggregates.indexOf(body.agg) < 0 ||
          this.catalogue.activity_ops.indexOf(body.op) < 0 || !has(body, "value") ||
          !shows(NUMBER_FIELD, body.op, body.value)) { return null; }
      var numeric = has(fields, body.field) && fields[body.field].type === "number";
      if (body.agg === "count" ? has(body, "field") : !numeric) { return null; }
      node.agg = body.agg;
      node.field = body.field;
      node.op = body.op;
      node.value = body.value;
    } else {
      if (["field", "op", "value"].some(function (k) { return has(body, k); })) { return null; }
      if (has(body, "exists") && typeof body.exists !== "boolean") { return null; }
      node.exists = body.exists;
    }
    return node;
  };

  // Whether a value box can show `value` for the field and operator, so that it reads back the same.
  function shows(field, op, value) {
    if (op === "between") {
      return Array.isArray(value) && value.length === 2 && value.every(function (v) { return showsOne(field, v); });
    }
    if (LIST_OPS.indexOf(op) >= 0) {
      return Array.isArray(value) && value.length > 0 && value.every(function (v) {
        return showsOne(field, v) && (typeof v !== "string" || (v === v.trim() && v !== "" && v.indexOf(",") < 0));
      });
    }
    return showsOne(field, value);
  }

  // A number box shows text too (what a user typed that is no number, sent back by a form with errors).
  function showsOne(field, v) {
    if (field.type === "number") { return isNumber(v) || typeof v === "string"; }
    if (field.type === "choice") { return v === "" || (typeof v === "string" && field.choices.indexOf(v) >= 0); }
    if (field.type === "date" || field.type === "datetime") {
      return typeof v === "string" || relativeUnit(v) !== null;
    }
    return typeof v === "string";
  }

  function toRule(node) {
    var rule;
    if (node.type === "raw") { return node.rule; }
    if (node.type === "group") {
      if (node.implicit && node.children.length === 1 && !node.negate) { return toRule(node.children[0]); }
      rule = {};
      rule[node.mode] = node.children.map(toRule);
    } else if (node.type === "tag" || node.type === "segment") {
      rule = {};
      rule[node.type] = node.ref;
    } else if (node.type === "activity") {
      var body = {kind: node.kind};
      if (node.where.length || node.keepWhere) { body.where = node.where.map(toRule); }
      if (node.within !== undefined) { body.within_days = node.within; }
      if (node.agg) {
        body.agg = node.agg;
        if (node.field !== undefined) { body.field = node.field; }
        body.op = node.op;
        body.value = node.value;
      } else if (node.exists !== undefined) {
        body.exists = node.exists;
      }
      rule = {activity: body};
    } else {
      rule = {field: node.field, op: node.op};
      if (NO_VALUE.indexOf(node.op) < 0) { rule.value = node.value; }
    }
    return node.negate ? {not: rule} : rule;
  }

  function singleValue(op) { return op !== "between" && LIST_OPS.indexOf(op) < 0 && NO_VALUE.indexOf(op) < 0; }

  function emptyValue(op) { return op === "between" ? ["", ""] : LIST_OPS.indexOf(op) >= 0 ? [] : ""; }

  Builder.prototype.changed = function () {
    var rule = this.rule();
    this.textarea.value = rule === null ? "" : stringify(rule);
    this.render();
    this.schedulePreview();
  };

  Builder.prototype.schedulePreview = function () {
    var self = this;
    clearTimeout(this.timer);
    this.timer = setTimeout(function () { self.runPreview(); }, 300);
  };

  Builder.prototype.newField = function () {
    var first = this.catalogue.fields[0];
    return {type: "field", negate: false, field: first.name, op: first.ops[0], value: emptyValue(first.ops[0])};
  };

  Builder.prototype.newNode = function (type) {
    if (type === "field") { return this.newField(); }
    if (type === "activity") {
      return {type: "activity", negate: false, kind: Object.keys(this.activityFields)[0], where: [], keepWhere: false,
              within: undefined, exists: undefined};
    }
    var names = type === "tag" ? this.catalogue.tags : this.catalogue.segments;
    return {type: type, negate: false, ref: names[0] || ""};
  };

  Builder.prototype.render = function () {
    this.tree.innerHTML = "";
    this.tree.appendChild(this.renderGroup(this.model, null, ""));
  };

  Builder.prototype.renderNode = function (node, parent, path) {
    return node.type === "group" ? this.renderGroup(node, parent, path) : this.renderCondition(node, parent, path);
  };

  Builder.prototype.negateBox = function (node) {
    var self = this;
    var box = el("input", {type: "checkbox", "class": "rb-negate"});
    box.checked = node.negate;
    box.addEventListener("change", function () { node.negate = box.checked; self.changed(); });
    return el("label", {"class": "rb-not", title: "true when the condition is not"}, [box, " not"]);
  };

  Builder.prototype.renderGroup = function (group, parent, path) {
    var self = this;
    var collapsed = group.implicit && group.children.length === 1 && !group.negate;
    // A root group that is not written out leaves its path to its only child.
    var box = el("div", collapsed ? {"class": "rb-group"} : {"class": "rb-group", "data-path": path});
    var mode = select([["all", "all of"], ["any", "any of"]], group.mode, "rb-mode", "combine");
    mode.addEventListener("change", function () { group.mode = mode.value; self.changed(); });
    var header = el("div", {"class": "rb-header"}, [this.negateBox(group), mode]);
    var addCondition = el("button", {type: "button", "class": "rb-add-condition", text: "+ condition"});
    addCondition.addEventListener("click", function () { group.children.push(self.newField()); self.changed(); });
    var addGroup = el("button", {type: "button", "class": "rb-add-group", text: "+ group"});
    addGroup.addEventListener("click", function () {
      group.children.push({type: "group", mode: "any", negate: false, implicit: false, children: [self.newField()]});
      self.changed();
    });
    header.appendChild(addCondition);
    header.appendChild(addGroup);
    if (parent) { header.appendChild(this.removeButton(parent.children, group)); }
    box.appendChild(header);
    var list = el("div", {"class": "rb-children"});
    var inner = group.negate ? join(path, "not") : path;
    group.children.forEach(function (child, i) {
      list.appendChild(self.renderNode(child, group, collapsed ? path : join(inner, group.mode + "[" + i + "]")));
    });
    box.appendChild(list);
    return box;
  };

  Builder.prototype.removeButton = function (list, node) {
    var self = this;
    var button = el("button", {type: "button", "class": "rb-remove", title: "remove", text: "×"});
    button.addEventListener("click", function () {
      list.splice(list.indexOf(node), 1);
      self.changed();
    });
    return button;
  };

  Builder.prototype.renderCondition = function (node, parent, path) {
    var self = this;
    var row = el("div", {"class": "rb-condition rb-node-" + node.type, "data-path": path});
    var inner = node.negate ? join(path, "not") : path;
    if (node.type === "raw") {
      row.appendChild(el("span", {"class": "rb-raw-label", text: "kept as written (edit it in the JSON below):"}));
      row.appendChild(el("code", {"class": "rb-json", text: stringify(node.rule)}));
      row.appendChild(this.removeButton(parent.children, node));
      return row;
    }
    var line = el("div", {"class": "rb-line"}, [this.negateBox(node)]);
    var kinds = [["field", "field"], ["tag", "has tag"]]
      .concat(this.catalogue.tag_rule ? [] : [["segment", "in segment"]]).concat([["activity", "activity"]]);
    var kind = select(kinds, node.type, "rb-kind", "condition type");
    kind.addEventListener("change", function () {
      var fresh = self.newNode(kind.value);
      fresh.negate = node.negate;
      parent.children[parent.children.indexOf(node)] = fresh;
      self.changed();
    });
    line.appendChild(kind);
    row.appendChild(line);
    if (node.type === "tag" || node.type === "segment") {
      var names = (node.type === "tag" ? this.catalogue.tags : this.catalogue.segments).slice();
      if (names.indexOf(node.ref) < 0) { names.unshift(node.ref); }
      var pick = select(names.map(function (n) { return [n, n]; }), node.ref, "rb-ref", node.type);
      pick.addEventListener("change", function () { node.ref = pick.value; self.changed(); });
      line.appendChild(pick);
    } else if (node.type === "activity") {
      this.renderActivity(node, line, row, inner);
    } else {
      this.renderField(node, this.fields, line);
    }
    line.appendChild(this.removeButton(parent.children, node));
    return row;
  };

  // field, operator and value boxes of a field condition (of the profile, or of an activity's where)
  Builder.prototype.renderField = function (cond, fields, row) {
    var self = this;
    var field = fields[cond.field];
    var names = Object.keys(fields).map(function (name) { return [name, fields[name].label]; });
    var fieldSelect = select(names, field.name, "rb-field", "field");
    fieldSelect.addEventListener("change", function () {
      cond.field = fieldSelect.value;
      var ops = fields[cond.field].ops;
      if (ops.indexOf(cond.op) < 0) { cond.op = ops[0]; }
      cond.value = emptyValue(cond.op);
      self.changed();
    });
    var op = select(field.ops.map(function (o) { return [o, OP_LABELS[o] || o]; }), cond.op, "rb-op", "operator");
    op.addEventListener("change", function () {
      // A single value carries over to another single-value operator; lists, pairs and "no value" start afresh.
      if (!(singleValue(cond.op) && singleValue(op.value))) { cond.value = emptyValue(op.value); }
      cond.op = op.value;
      self.changed();
    });
    row.appendChild(fieldSelect);
    row.appendChild(op);
    this.renderValue(field, cond, "value", row, "rb-value");
  };

  // The value of `holder[key]` for the operator holder.op: one box, two for between, a list for in / not in.
  Builder.prototype.renderValue = function (field, holder, key, row, cls) {
    var self = this;
    var op = holder.op;
    if (NO_VALUE.indexOf(op) >= 0) { return; }
    if (op === "between") {
      var pair = Array.isArray(holder[key]) ? holder[key] : ["", ""];
      [0, 1].forEach(function (i) {
        if (i) { row.appendChild(el("span", {text: "and"})); }
        row.appendChild(self.valueInput(field, pair[i], cls, function (v) { pair[i] = v; holder[key] = pair; }));
      });
    } else if (LIST_OPS.indexOf(op) >= 0) {
      var list = Array.isArray(holder[key]) ? holder[key] : [];
      var input = textInput(list.map(numberText).join(", "), cls, "values",
                            field.choices.length ? field.choices.join(", ") : "comma-separated");
      input.addEventListener("change", function () {
        holder[key] = input.value.split(",").map(function (v) { return v.trim(); }).filter(Boolean)
          .map(function (v) { return field.type === "number" ? typedNumber(v) : v; });
        self.changed();
      });
      row.appendChild(input);
    } else {
      row.appendChild(this.valueInput(field, holder[key], cls, function (v) { holder[key] = v; }));
    }
  };

  // One value box. Dates are a date or a relative date: {"days_ago": N} or {"years_ago": N}.
  Builder.prototype.valueInput = function (field, value, cls, set) {
    var self = this;
    if (field.type === "choice") {
      var choice = select([["", "—"]].concat(field.choices.map(function (c) { return [c, c]; })), value, cls, "value");
      choice.addEventListener("change", function () { set(choice.value); self.changed(); });
      return choice;
    }
    if (field.type === "date" || field.type === "datetime") {
      var unit = relativeUnit(value);
      var mode = select([["date", "on date"], ["days_ago", "days ago"], ["years_ago", "years ago"]], unit || "date",
                        "rb-date-mode", "date or relative date");
      var box = textInput(unit ? numberText(value[unit]) : (value || ""), cls, "value", unit ? "N" : "YYYY-MM-DD");
      var relative = function (u, amount) { var v = {}; v[u] = amount; return v; };
      mode.addEventListener("change", function () {
        var amount = unit ? value[unit] : "";
        set(mode.value === "date" ? "" : relative(mode.value, amount));
        self.changed();
      });
      box.addEventListener("change", function () {
        var raw = box.value.trim();
        set(unit ? relative(unit, typedNumber(raw)) : raw);
        self.changed();
      });
      return el("span", {"class": "rb-date"}, [box, mode]);
    }
    var shown = field.type === "number" ? numberText(value) : (value === undefined ? "" : value);
    var input = textInput(shown, cls, "value",
                          field.examples.length ? "e.g. " + stringify(field.examples[0]) : "");
    input.addEventListener("change", function () {
      var raw = input.value.trim();
      set(field.type === "number" ? typedNumber(raw) : raw);
      self.changed();
    });
    return input;
  };

  // kind, window, what is measured (rows exist or not, or an aggregate compared with a value), and where conditions
  Builder.prototype.renderActivity = function (node, line, row, path) {
    var self = this;
    var fields = this.activityFields[node.kind];
    var kind = select(Object.keys(this.activityFields).map(function (k) { return [k, k.replace(/_/g, " ")]; }),
                      node.kind, "rb-activity-kind", "activity kind");
    kind.addEventListener("change", function () {
      // The window and the measure stay; the where conditions are on the old kind's fields.
      node.kind = kind.value;
      node.where = [];
      var numeric = self.numericFields(self.activityFields[node.kind]);
      if (node.field !== undefined && numeric.indexOf(node.field) < 0) { node.field = numeric[0]; }
      self.changed();
    });
    var within = textInput(numberText(node.within), "rb-within", "within days", "all time");
    within.addEventListener("change", function () {
      var raw = within.value.trim();
      node.within = raw === "" ? undefined : typedNumber(raw);
      self.changed();
    });
    var measures = [["exists", "has a row"], ["none", "has no row"]].concat(
      this.catalogue.aggregates.map(function (a) { return [a, AGG_LABELS[a] || a]; }));
    var measure = select(measures, node.agg || (node.exists === false ? "none" : "exists"), "rb-agg", "measure");
    measure.addEventListener("change", function () {
      var choice = measure.value;
      if (choice === "exists" || choice === "none") {
        ["agg", "field", "op", "value"].forEach(function (k) { delete node[k]; });
        node.exists = choice === "none" ? false : (node.exists === true ? true : undefined);
      } else {
        delete node.exists;
        node.field = choice === "count" ? undefined : (node.field || self.numericFields(fields)[0]);
        node.op = node.op || "gte";
        node.value = node.agg ? node.value : "";
        node.agg = choice;
      }
      self.changed();
    });
    line.appendChild(kind);
    line.appendChild(el("span", {text: "in the last"}));
    line.appendChild(within);
    line.appendChild(el("span", {text: "days,"}));
    line.appendChild(measure);
    if (node.agg) {
      if (node.agg !== "count") {
        var field = select(this.numericFields(fields).map(function (f) { return [f, fields[f].label]; }), node.field,
                           "rb-agg-field", "aggregated field");
        field.addEventListener("change", function () { node.field = field.value; self.changed(); });
        line.appendChild(field);
      }
      var op = select(this.catalogue.activity_ops.map(function (o) { return [o, OP_LABELS[o] || o]; }), node.op,
                      "rb-agg-op", "comparison");
      op.addEventListener("change", function () {
        if ((op.value === "between") !== (node.op === "between")) { node.value = emptyValue(op.value); }
        node.op = op.value;
        self.changed();
      });
      line.appendChild(op);
      this.renderValue(NUMBER_FIELD, node, "value", line, "rb-agg-value");
    }
    var where = el("div", {"class": "rb-where", "data-path": join(path, "activity.where")},
                   [el("span", {"class": "rb-where-label", text: node.where.length ? "where" : ""})]);
    node.where.forEach(function (leaf, i) {
      var wherePath = join(path, "activity.where[" + i + "]");
      var whereRow = el("div", {"class": "rb-where-condition", "data-path": wherePath});
      if (leaf.type === "raw") {
        whereRow.appendChild(el("span", {"class": "rb-raw-label", text: "kept as written:"}));
        whereRow.appendChild(el("code", {"class": "rb-json", text: stringify(leaf.rule)}));
      } else {
        self.renderField(leaf, fields, whereRow);
      }
      whereRow.appendChild(self.removeButton(node.where, leaf));
      where.appendChild(whereRow);
    });
    var addWhere = el("button", {type: "button", "class": "rb-add-where", text: "+ where"});
    addWhere.addEventListener("click", function () {
      var first = fields[Object.keys(fields).filter(function (f) { return f !== "amount"; })[0] || "amount"];
      node.where.push({type: "field", negate: false, field: first.name, op: first.ops[0],
                       value: emptyValue(first.ops[0])});
      self.changed();
    });
    where.appendChild(addWhere);
    row.appendChild(where);
  };

  Builder.prototype.numericFields = function (fields) {
    return Object.keys(fields).filter(function (f) { return fields[f].type === "number"; });
  };

  Builder.prototype.markError = function (path) {
    // The deepest node the path reaches: "all[0].activity.where[1].value" marks that where condition.
    var p = path === "rule" ? "" : path;
    for (;;) {
      var node = this.tree.querySelector('[data-path="' + CSS.escape(p) + '"]');
      if (node) { node.classList.add("rb-error"); return; }
      if (!p) { return; }
      p = p.replace(/(^|\.)[^.[]+$|\[\d+\]$/, "");
    }
  };

  Builder.prototype.runPreview = function () {
    var self = this;
    var url = this.root.dataset.previewUrl;
    if (!url) { return; }
    if (!this.model) { return; }
    var rule = this.rule();
    if (rule === null) { this.preview.textContent = "Add a condition to see who matches."; return; }
    var csrf = document.querySelector("input[name=csrfmiddlewaretoken]");
    var slug = document.getElementById("id_slug");
    this.preview.textContent = "counting…";
    fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRFToken": csrf ? csrf.value : ""},
      // The rule as shown, numbers as written.
      body: '{"rule": ' + stringify(rule) + ', "segment": ' + JSON.stringify(this.root.dataset.segment || null) +
            ', "slug": ' + JSON.stringify(slug ? slug.value : null) + "}"
    }).then(function (r) { return r.json(); }).then(function (data) {
      self.tree.querySelectorAll(".rb-error").forEach(function (n) { n.classList.remove("rb-error"); });
      if (data.error) {
        self.preview.className = "rule-builder-preview rb-invalid";
        self.preview.textContent = data.path + ": " + data.error;
        self.markError(data.path || "");
        return;
      }
      self.preview.className = "rule-builder-preview";
      var text = "Matches " + data.count + " profiles";
      if (data.diff) {
        text += " (would enter " + data.diff.would_enter + ", would leave " + data.diff.would_leave + ")";
      }
      self.preview.textContent = text;
      var ul = el("ul", {"class": "rb-sample"});
      data.sample.forEach(function (p) {
        ul.appendChild(el("li", {text: p.public_id + " " + p.name + " " + p.city}));
      });
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
