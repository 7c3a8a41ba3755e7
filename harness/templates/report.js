/* bnparity report: filters, sorting, cell detail, portability. Vanilla JS, no network.
   Everything taken from the data blob reaches the page through textContent, never as markup. */
(function () {
  "use strict";
  var $ = function (s, el) { return (el || document).querySelector(s); };
  var $$ = function (s, el) { return Array.prototype.slice.call((el || document).querySelectorAll(s)); };
  var D = null;
  var FAILING = ["fail", "stale", "raised", "crashed", "timeout"];
  var QUIET = ["pass", "skip", "expected-raise"];
  var SEVERITY = ["pass", "skip", "expected-raise", "known", "stale", "fail", "raised", "timeout", "crashed"];
  var SYMBOL = {"pass": "", "skip": "–", "expected-raise": "E", "known": "K", "stale": "S", "fail": "F",
                "raised": "R", "timeout": "T", "crashed": "C"};
  var ULP_VERDICTS = ["pass", "known", "fail", "stale"];
  var state = {adapter: "", env: "", verdict: "", tag: "", quantity: "", text: ""};
  var sortState = {key: null, dir: 1};

  function h(tag, attrs) {
    var el = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        var v = attrs[k];
        if (v === null || v === undefined || v === false) return;
        if (k === "text") el.textContent = String(v);
        else if (k === "cls") el.className = v;
        else if (k === "on") Object.keys(v).forEach(function (ev) { el.addEventListener(ev, v[ev]); });
        else el.setAttribute(k, String(v));
      });
    }
    for (var i = 2; i < arguments.length; i++) {
      var c = arguments[i];
      if (c === null || c === undefined || c === false) continue;
      if (Array.isArray(c)) c.forEach(function (x) { if (x) el.appendChild(typeof x === "string" ? document.createTextNode(x) : x); });
      else el.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
    }
    return el;
  }

  function rank(v) { var i = SEVERITY.indexOf(v); return i < 0 ? SEVERITY.indexOf("fail") : i; }
  function vname(i) { return D.verdicts[i]; }
  function toNum(x) {
    if (x === null || x === undefined) return null;
    if (typeof x === "number") return x;
    if (x === "inf") return Infinity;
    if (x === "-inf") return -Infinity;
    if (x === "nan") return NaN;
    var f = parseFloat(x);
    return isNaN(f) ? null : f;
  }
  function fmtUlp(u) {  /* mirrors report_model.fmt_ulp */
    if (u === null || u === undefined || isNaN(u)) return "";
    if (!isFinite(u)) return "inf";
    if (u === 0) return "0";
    if (u < 0.01) return "<.01";
    if (u < 10) return String(Number(u.toPrecision(2)));
    if (u < 1000) return u.toFixed(0);
    return u.toExponential(1).replace("e+", "e");
  }
  function fmt(x, digits) {
    if (x === null || x === undefined) return "";
    if (typeof x === "string") return x;
    if (typeof x !== "number") return JSON.stringify(x);
    if (x === 0) return "0";
    if (!isFinite(x)) return x > 0 ? "inf" : (x < 0 ? "-inf" : "nan");
    var ax = Math.abs(x), d = digits || 4;
    if (Number.isInteger(x) && ax < 1e6) return String(x);
    if (ax < 1e-3 || ax >= 1e6) return x.toExponential(d - 1).replace(/\.?0+e/, "e").replace("e+", "e");
    return String(Number(x.toPrecision(d)));
  }
  /* expected / observed at the worst element: a missing value next to a worst index is a NaN there */
  function valueText(r, i, bad) {
    if ((r[i] === null || r[i] === undefined) && r[8]) return "nan";
    return fmt(r[i], bad ? 9 : 6);
  }
  function fmtParam(v) {
    if (v === null || v === undefined) return "";
    if (typeof v === "number") return String(Number(v.toPrecision(12)));  // 1 - 0.9 reads 0.1
    if (typeof v === "object") return JSON.stringify(v);
    return String(v);
  }

  /* -- the data blob ------------------------------------------------------------------------ */
  function loadData() {
    var el = document.getElementById("bn-data");
    var text = el.textContent;
    if (el.getAttribute("data-encoding") === "gzip+base64") {
      if (typeof DecompressionStream === "undefined") {
        return Promise.reject(new Error("this browser has no DecompressionStream: open the report in a current Chrome, Firefox or Safari"));
      }
      var bin = atob(text.trim());
      var bytes = new Uint8Array(bin.length);
      for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
      var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
      return new Response(stream).text().then(JSON.parse);
    }
    return Promise.resolve(JSON.parse(text));
  }

  /* per-quantity view of a cell: the worst verdict and largest ULP error of that quantity */
  function cellView(key, qname) {
    var cell = D.cells[key];
    if (!cell) return null;
    if (!qname) return {v: vname(cell.v), u: toNum(cell.u)};
    var qi = D.quantities.indexOf(qname);
    var rs = cell.r.filter(function (r) { return r[0] === qi; });
    if (!rs.length) {
      if (!cell.r.length && cell.o) return {v: vname(cell.o.v), u: null};
      return {v: "none", u: null};
    }
    var worst = "pass", u = null;
    rs.forEach(function (r) {
      var v = vname(r[2]);
      if (rank(v) > rank(worst)) worst = v;
      var x = toNum(r[5]);
      if (x !== null && !isNaN(x) && (u === null || x > u)) u = x;
    });
    return {v: worst, u: u};
  }

  function verdictMatches(v) {
    var f = state.verdict;
    if (!f) return true;
    if (f === "attention") return QUIET.indexOf(v) < 0 && v !== "none";
    if (f === "failing") return FAILING.indexOf(v) >= 0;
    return v === f;
  }

  /* -- filters ------------------------------------------------------------------------------ */
  var colStyle = null;
  function visibleCols() {
    return D.cols.map(function (c) {
      return (!state.env || c[0] === state.env) && (!state.adapter || c[1] === state.adapter);
    });
  }

  function paintMatrix() {
    var q = state.quantity;
    $$("#matrix-table tbody tr[data-r]").forEach(function (tr) {
      var r = tr.getAttribute("data-r");
      $$("td", tr).forEach(function (td) {
        var c = td.getAttribute("data-c");
        var view = cellView(r + ":" + c, q);
        if (!view) return;
        td.className = view.v === "none" ? "none" : "v-" + view.v;
        td.textContent = view.v === "none" ? "" :
          (ULP_VERDICTS.indexOf(view.v) >= 0 && view.u !== null ? fmtUlp(view.u) : (SYMBOL[view.v] !== undefined ? SYMBOL[view.v] : view.v.charAt(0).toUpperCase()));
      });
    });
    markSelected();
  }

  function applyFilters() {
    var vis = visibleCols();
    var css = [];
    vis.forEach(function (ok, c) { if (!ok) css.push('#matrix-table [data-c="' + c + '"]'); });
    colStyle.textContent = css.length ? css.join(",") + "{display:none}" : "";
    $$("#matrix-table th.env-h").forEach(function (th) {
      var env = th.getAttribute("data-env");
      var n = 0;
      D.cols.forEach(function (c, i) { if (c[0] === env && vis[i]) n++; });
      th.style.display = n ? "" : "none";
      if (n) th.colSpan = n;
    });
    var text = state.text.toLowerCase();
    var shown = 0, total = 0;
    $$("#matrix-table tbody").forEach(function (tb) {
      var n = 0;
      $$("tr[data-r]", tb).forEach(function (tr) {
        total++;
        var ok = true;
        if (state.tag && (" " + tr.getAttribute("data-tags") + " ").indexOf(" " + state.tag + " ") < 0) ok = false;
        if (ok && text && tr.getAttribute("data-search").indexOf(text) < 0) ok = false;
        var anyCell = false, anyMatch = false;
        var r = tr.getAttribute("data-r");
        $$("td", tr).forEach(function (td) {
          var c = +td.getAttribute("data-c");
          if (!vis[c]) return;
          var view = cellView(r + ":" + c, state.quantity);
          var m = view !== null && view.v !== "none" && verdictMatches(view.v);
          if (view !== null && view.v !== "none") anyCell = true;
          if (m) anyMatch = true;
          td.classList.toggle("dim", !!state.verdict && view !== null && !m);
        });
        if (ok && state.verdict && !anyMatch) ok = false;
        if (ok && (state.adapter || state.env) && !anyCell) ok = false;
        tr.style.display = ok ? "" : "none";
        if (ok) { n++; shown++; }
      });
      var g = $("tr.group", tb);
      if (g) { g.style.display = n ? "" : "none"; var badge = $(".n", g); if (badge) badge.textContent = String(n); }
    });
    var ncols = vis.filter(Boolean).length;
    $("#f-status").textContent = "showing " + shown + " of " + total + " cases, " + ncols + " of " + D.cols.length + " columns";
    $$("table.filterable tbody tr, .filterable-block").forEach(function (el) {
      var ok = true;
      var a = el.getAttribute("data-adapter"), e = el.getAttribute("data-env"), v = el.getAttribute("data-verdict");
      var tags = el.getAttribute("data-tags");
      if (state.adapter && a !== null && a !== state.adapter) ok = false;
      if (state.env && e !== null && e !== state.env) ok = false;
      if (state.tag && tags !== null && (" " + tags + " ").indexOf(" " + state.tag + " ") < 0) ok = false;
      if (state.verdict && v !== null && !v.split(" ").some(verdictMatches)) ok = false;
      if (text && el.textContent.toLowerCase().indexOf(text) < 0 &&
          (el.getAttribute("data-case") || "").toLowerCase().indexOf(text) < 0) ok = false;
      el.style.display = ok ? "" : "none";
    });
    $$("#verdict-chips .chip").forEach(function (ch) { ch.classList.toggle("active", ch.getAttribute("data-verdict") === state.verdict); });
    renderPortability();
  }

  function bindFilters() {
    [["adapter", "#f-adapter"], ["env", "#f-env"], ["verdict", "#f-verdict"], ["tag", "#f-tag"], ["quantity", "#f-quantity"]].forEach(function (p) {
      $(p[1]).addEventListener("change", function (ev) {
        state[p[0]] = ev.target.value;
        if (p[0] === "quantity") { paintMatrix(); if (sortState.key !== null) sortMatrix(sortState.key, sortState.dir); }
        if (p[0] === "env" && state.env) $("#p-env").value = state.env;
        applyFilters();
      });
    });
    var timer = null;
    $("#f-text").addEventListener("input", function (ev) {
      clearTimeout(timer);
      timer = setTimeout(function () { state.text = ev.target.value.trim(); applyFilters(); }, 120);
    });
    $("#f-reset").addEventListener("click", function () {
      Object.keys(state).forEach(function (k) { state[k] = ""; });
      ["#f-adapter", "#f-env", "#f-verdict", "#f-tag", "#f-quantity", "#f-text"].forEach(function (s) { $(s).value = ""; });
      paintMatrix();
      applyFilters();
    });
    $$("#verdict-chips .chip").forEach(function (ch) {
      ch.addEventListener("click", function () {
        var v = ch.getAttribute("data-verdict");
        state.verdict = state.verdict === v ? "" : v;
        $("#f-verdict").value = state.verdict;
        applyFilters();
      });
    });
  }

  /* -- sorting ------------------------------------------------------------------------------ */
  function sortMatrix(key, dir) {
    sortState = {key: key, dir: dir};
    $$("#matrix-table thead th.sorter").forEach(function (th) { th.removeAttribute("aria-sort"); });
    var th = key === "name" ? $("#matrix-table th.case-h") : $('#matrix-table th.ad-h[data-c="' + key + '"]');
    if (th) th.setAttribute("aria-sort", dir > 0 ? "ascending" : "descending");
    $$("#matrix-table tbody").forEach(function (tb) {
      var rows = $$("tr[data-r]", tb);
      var keyed = rows.map(function (tr) {
        var r = tr.getAttribute("data-r");
        var k;
        if (key === "name") k = [D.cases[+r].n.toLowerCase()];
        else {
          var view = cellView(r + ":" + key, state.quantity);
          // worst first: severity, then error; "not run" last whichever way
          k = view === null || view.v === "none" ? [-1, -1] : [rank(view.v), view.u === null ? -1 : view.u];
        }
        return {tr: tr, k: k, r: +r};
      });
      keyed.sort(function (a, b) {
        for (var i = 0; i < a.k.length; i++) {
          if (a.k[i] < b.k[i]) return key === "name" ? -dir : dir;
          if (a.k[i] > b.k[i]) return key === "name" ? dir : -dir;
        }
        return a.r - b.r;
      });
      keyed.forEach(function (x) { tb.appendChild(x.tr); });
    });
  }

  function bindSorting() {
    $$("#matrix-table thead th.sorter").forEach(function (th) {
      th.addEventListener("click", function () {
        var key = th.classList.contains("case-h") ? "name" : th.getAttribute("data-c");
        var dir = sortState.key === key ? -sortState.dir : 1;
        sortMatrix(key, dir);
      });
    });
    $$("table.sortable").forEach(function (table) {
      $$("thead th", table).forEach(function (th, col) {
        th.addEventListener("click", function () {
          var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
          $$("thead th", table).forEach(function (o) { o.removeAttribute("aria-sort"); });
          th.setAttribute("aria-sort", dir > 0 ? "ascending" : "descending");
          var tb = table.tBodies[0];
          var rows = Array.prototype.slice.call(tb.rows);
          var val = function (tr) {
            var td = tr.cells[col];
            if (!td) return "";
            var s = td.getAttribute("data-sort");
            if (s === null) s = td.textContent.trim();
            var f = parseFloat(s);
            return isNaN(f) || !/^[-+]?[0-9.]/.test(s) ? s.toLowerCase() : f;
          };
          rows.sort(function (a, b) {
            var x = val(a), y = val(b);
            if (typeof x !== typeof y) { x = String(x); y = String(y); }
            return x < y ? -dir : x > y ? dir : 0;
          });
          rows.forEach(function (tr) { tb.appendChild(tr); });
        });
      });
    });
  }

  /* -- cell detail -------------------------------------------------------------------------- */
  var current = null;
  function markSelected() {
    $$("#matrix-table td.sel").forEach(function (td) { td.classList.remove("sel"); });
    if (!current) return;
    var p = current.split(":");
    var td = $('#matrix-table tr[data-r="' + p[0] + '"] td[data-c="' + p[1] + '"]');
    if (td) td.classList.add("sel");
  }

  function kvTable(pairs) {
    return h("table", {cls: "data kv"}, h("tbody", null, pairs.filter(function (p) { return p[1] !== undefined && p[1] !== null && p[1] !== ""; }).map(function (p) {
      return h("tr", null, h("th", {text: p[0]}), h("td", {cls: "mono", text: fmtParam(p[1])}));
    })));
  }

  function reproScript(caseRow, adapter) {
    var tmpl = D.templates[adapter];
    if (!tmpl || !caseRow.j) return null;
    return tmpl.replace(D.placeholder, caseRow.j);
  }

  function copyText(text, done) {
    function fallback() {
      var ta = h("textarea", {style: "position:fixed;left:-9999px;top:0"});
      ta.value = text;
      document.body.appendChild(ta);
      ta.select();
      var ok = false;
      try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
      document.body.removeChild(ta);
      done(ok);
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { done(true); }, fallback);
    } else fallback();
  }

  function openDetail(key) {
    var cell = D.cells[key];
    if (!cell) return;
    current = key;
    markSelected();
    var p = key.split(":");
    var row = D.cases[+p[0]], col = D.cols[+p[1]];
    var env = col[0], adapter = col[1];
    var verdict = vname(cell.v);
    var params = row.j ? JSON.parse(row.j) : {};
    var body = $("#d-body");
    body.textContent = "";
    $("#d-title").textContent = "";
    $("#d-title").appendChild(h("span", null, row.n + " × " + adapter + " ", h("span", {cls: "sub", text: "@ " + env})));
    body.appendChild(h("p", null, h("span", {cls: "verdict v-" + verdict, text: verdict}),
      " worst error " + (fmtUlp(toNum(cell.u)) || "n/a") + " ulp",
      cell.fv ? " · " + adapter + " framework " + cell.fv : "",
      cell.st && cell.st !== "returned" ? " · worker " + cell.st : ""));
    if (row.d) body.appendChild(h("p", {cls: "sub", text: row.d}));
    if (cell.start) {
      body.appendChild(h("h3", {text: "Where it starts"}));
      body.appendChild(h("div", {cls: "start", text: cell.start}));
    }
    // outcome of the call
    if (cell.o) {
      var ov = vname(cell.o.v);
      body.appendChild(h("h3", {text: "Outcome"}));
      body.appendChild(h("p", null, h("span", {cls: "verdict v-" + ov, text: ov}), " " + (cell.o.m || "")));
      if (cell.o.t) body.appendChild(kvTable([["exception", cell.o.t], ["message", cell.o.e], ["during", cell.o.s]]));
      if (cell.o.x !== undefined) body.appendChild(kvTable([["exit code", cell.o.x]]));
      if (cell.o.tail) { body.appendChild(h("div", {cls: "sub", text: "stderr tail"})); body.appendChild(h("pre", {cls: "wrap", text: cell.o.tail})); }
    }
    // quantities
    if (cell.r.length) {
      body.appendChild(h("h3", {text: "Quantities (" + cell.r.length + ")"}));
      var head = ["step", "quantity", "verdict", "max abs", "max rel", "ULP", "threshold", "err/bound", "worst index", "expected", "observed", "mismatched"];
      var rows = [];
      var ledgers = [];
      cell.r.forEach(function (r) {
        var v = vname(r[2]);
        var q = D.quantities[r[0]];
        var bad = v !== "pass";
        var kind = r[13] !== undefined && r[13] !== null ? D.kinds[r[13]] : "";
        var idx = r[8] ? "(" + r[8].join(", ") + ")" : "";
        var cells = [
          h("td", {text: r[1] === null || r[1] === undefined ? (q.indexOf("_eval") > 0 ? "eval" : "") : String(r[1])}),
          h("td", {text: q}),
          h("td", {cls: "v-" + v, text: v + (kind && kind !== "match" && kind !== "value" ? " (" + kind + ")" : "")}),
          h("td", {cls: "num", text: fmt(r[3], 3)}), h("td", {cls: "num", text: fmt(r[4], 3)}),
          h("td", {cls: "num", text: fmtUlp(toNum(r[5]))}), h("td", {cls: "num", text: fmt(r[6], 3)}),
          h("td", {cls: "num", text: fmt(r[7], 3)}), h("td", {cls: "num", text: idx}),
          h("td", {cls: "num", text: valueText(r, 9, bad)}), h("td", {cls: "num", text: valueText(r, 10, bad)}),
          h("td", {cls: "num", text: r[12] ? (r[11] || 0) + " / " + r[12] : ""})
        ];
        rows.push(h("tr", {cls: bad ? "bad" : null, "data-q": q}, cells));
        if (r[14] && ledgers.indexOf(r[14]) < 0) ledgers.push(r[14]);
        if (r[15]) rows.push(h("tr", {cls: "msg"}, h("td", {colspan: head.length, text: r[15]})));
      });
      body.appendChild(h("div", {cls: "table-wrap"}, h("table", {cls: "data q"},
        h("thead", null, h("tr", null, head.map(function (x) { return h("th", {text: x}); }))),
        h("tbody", null, rows))));
      if (ledgers.length) {
        body.appendChild(h("h3", {text: "Ledger (cases/known_differences.toml)"}));
        ledgers.forEach(function (id) {
          var e = D.ledger[id] || {};
          var link = e.link ? h("a", {href: e.link, target: "_blank", rel: "noopener noreferrer", text: e.link})
                            : (e.raw_link ? h("span", {text: e.raw_link + " (not an http(s) link)"}) : null);
          body.appendChild(h("div", {cls: "ledger"},
            h("p", null, h("b", {text: id}), " · " + (e.kind || "") + (e.versions ? " · versions " + e.versions : "")),
            h("p", null, h("b", {text: "reason: "}), e.reason || ""),
            e.observed ? h("p", null, h("b", {text: "observed: "}), e.observed) : null,
            link ? h("p", null, h("b", {text: "link: "}), link) : null));
        });
      }
    }
    // conventions and settings
    var conv = cell.k !== undefined ? D.conventions[cell.k] : null;
    var set = cell.set || {}, eff = cell.eff || {};
    body.appendChild(h("h3", {text: "Conventions and settings"}));
    if (conv || cell.set) {
      body.appendChild(kvTable([
        ["momentum as passed to " + adapter, set.momentum === null ? "None (cumulative average)" : set.momentum],
        ["momentum style", conv ? conv.momentum_style : null],
        ["momentum, weight of the new statistic", eff.momentum],
        ["eps", set.eps],
        ["channel axis", set.axis],
        ["running variance estimator", conv ? conv.running_var_estimator : null],
        ["framework defaults (momentum, eps)", conv ? fmtParam(conv.default_momentum) + ", " + fmtParam(conv.default_eps) : null],
        ["native layout", conv ? conv.native_layout : null],
        ["one value per channel in training", conv ? conv.single_value_training : null],
        ["training flags", set.training_flags && Object.keys(set.training_flags).length ? set.training_flags : null],
        ["use_defaults (the case)", params.use_defaults ? "true: each framework's own defaults" : null],
        ["notes", conv ? conv.notes : null]
      ]));
    } else body.appendChild(h("p", {cls: "empty", text: "no settings recorded (the cell was skipped or did not finish)"}));
    if (cell.info && Object.keys(cell.info).length) {
      body.appendChild(h("h3", {text: "What the adapter reports"}));
      body.appendChild(kvTable(Object.keys(cell.info).map(function (k) { return [k, cell.info[k]]; })));
    }
    // case
    body.appendChild(h("h3", {text: "Case parameters"}));
    if (row.j) {
      body.appendChild(kvTable(Object.keys(params).filter(function (k) { return k !== "description"; })
        .map(function (k) { return [k, params[k]]; })));
    } else body.appendChild(h("p", {cls: "empty", text: "not recorded (no cell record for this case)"}));
    // reproduce
    body.appendChild(h("h3", {text: "Reproduce"}));
    body.appendChild(h("pre", {cls: "wrap", text:
      "bnparity repro " + row.n + " " + adapter + " > repro.py && python repro.py\n" +
      'pytest "tests/parity/test_parity.py::test_parity[' + adapter + "-" + row.n + ']" --adapters ' + adapter}));
    var script = reproScript(row, adapter);
    if (script) {
      var status = h("span", {cls: "ok"});
      var blobUrl = URL.createObjectURL(new Blob([script], {type: "text/x-python"}));
      body.appendChild(h("div", {cls: "actions"},
        h("button", {type: "button", id: "copy-repro", text: "Copy script", on: {click: function () {
          copyText(script, function (ok) { status.textContent = ok ? "copied" : "select the text below and copy it"; });
        }}}),
        h("a", {href: blobUrl, download: "repro_" + row.n + "_" + adapter + ".py", text: "Download .py"}),
        status));
      body.appendChild(h("pre", {id: "repro-script", text: script}));
    } else body.appendChild(h("p", {cls: "empty", text: "no reproducer: the case parameters were not recorded"}));
    var drawer = $("#detail");
    drawer.hidden = false;
    drawer.scrollTop = 0;
  }

  function closeDetail() { $("#detail").hidden = true; current = null; markSelected(); }

  function bindDetail() {
    $("#matrix-table").addEventListener("click", function (ev) {
      var td = ev.target.closest("td[data-c]");
      if (!td || td.classList.contains("none")) return;
      openDetail(td.parentNode.getAttribute("data-r") + ":" + td.getAttribute("data-c"));
    });
    document.addEventListener("click", function (ev) {
      var el = ev.target.closest("table.clickable [data-key]");
      if (el && !ev.target.closest("a")) openDetail(el.getAttribute("data-key"));
    });
    $("#d-close").addEventListener("click", closeDetail);
    document.addEventListener("keydown", function (ev) { if (ev.key === "Escape") closeDetail(); });
  }

  /* -- portability ------------------------------------------------------------------------- */
  function errsByStep(cell, qi) {
    var out = {};
    cell.r.forEach(function (r) { if (r[0] === qi) out[r[1] === null || r[1] === undefined ? "" : String(r[1])] = toNum(r[3]); });
    return out;
  }

  function pairBound(row, ka, kb, qname) {
    var a = D.cells[ka], b = D.cells[kb];
    var qi = D.quantities.indexOf(qname);
    var ea = errsByStep(a, qi), eb = errsByStep(b, qi);
    var steps = Object.keys(ea).filter(function (s) { return s in eb; });
    if (!steps.length) return {text: "—", title: "no " + qname + " in one of the two (raised, crashed or skipped)"};
    var gapsCase = D.gaps[String(row)];
    var gapOf = function () { return 0; }, differs = false;
    if (a.g !== undefined && b.g !== undefined && a.g !== b.g) {
      differs = true;
      var i = Math.min(a.g, b.g), j = Math.max(a.g, b.g);
      var d = gapsCase && gapsCase.d ? gapsCase.d[i + "," + j] : null;
      if (!d) return {text: "by convention", title: "different settings; the oracle could not be rebuilt here", cls: "conv"};
      gapOf = function (s) { return toNum(d[qname + "@" + s]); };
    }
    var lo = 0, hi = 0, gmax = 0, bad = false;
    steps.forEach(function (s) {
      var x = ea[s], y = eb[s], g = gapOf(s);
      if (x === null || y === null || g === null || isNaN(x) || isNaN(y) || isNaN(g)) { bad = true; return; }
      hi = Math.max(hi, g + x + y);
      lo = Math.max(lo, g - x - y);
      gmax = Math.max(gmax, g);
    });
    if (bad && hi === 0) return {text: "n/a", title: "NaN errors: no finite bound"};
    var title = "bound over " + steps.length + " step(s): " + (differs ? "oracle gap up to " + fmt(gmax, 3) + "; " : "same settings, oracle gap 0; ") +
      fmt(lo, 3) + " <= max|a - b| <= " + fmt(hi, 3);
    if (differs && gmax > 0) {
      var same = fmt(lo, 2) === fmt(hi, 2);
      return {text: same ? "≈ " + fmt(hi, 2) : fmt(lo, 2) + " – " + fmt(hi, 2), title: title, cls: "conv"};
    }
    return {text: "≤ " + fmt(hi, 2), title: title};
  }

  function portabilityCases() {
    var out = [];
    D.cases.forEach(function (c, r) {
      var perEnv = {};
      D.cols.forEach(function (col, ci) { if (D.cells[r + ":" + ci]) perEnv[col[0]] = (perEnv[col[0]] || 0) + 1; });
      if (Object.keys(perEnv).some(function (e) { return perEnv[e] > 1; })) out.push(r);
    });
    return out;
  }

  function renderPortability() {
    var out = $("#p-out");
    if (!out || !D) return;
    var r = $("#p-case").value, env = $("#p-env").value, q = $("#p-q").value;
    out.textContent = "";
    if (r === "") { out.appendChild(h("p", {cls: "empty", text: "No case ran on two or more adapters in one environment."})); return; }
    var cols = [];
    D.cols.forEach(function (col, ci) {
      if (col[0] === env && D.cells[r + ":" + ci] && (!state.adapter || true)) cols.push(ci);
    });
    if (cols.length < 2) { out.appendChild(h("p", {cls: "empty", text: "Fewer than two adapters ran this case in " + env + "."})); return; }
    var head = h("tr", null, h("th", {text: D.cases[+r].n + " · " + q}), cols.map(function (ci) { return h("th", {text: D.cols[ci][1]}); }));
    var body = cols.map(function (ca) {
      return h("tr", null, h("th", {text: D.cols[ca][1]}), cols.map(function (cb) {
        if (ca === cb) return h("td", {cls: "sub", text: "·"});
        var b = pairBound(r, r + ":" + ca, r + ":" + cb, q);
        return h("td", {cls: b.cls || null, title: b.title, text: b.text});
      }));
    });
    out.appendChild(h("table", {cls: "data", id: "p-table"}, h("thead", null, head), h("tbody", null, body)));
  }

  function adaptersIn(r, env) {
    var n = 0;
    D.cols.forEach(function (col, ci) { if (col[0] === env && D.cells[r + ":" + ci]) n++; });
    return n;
  }

  function initPortability() {
    var sel = $("#p-case"), envSel = $("#p-env");
    var cs = portabilityCases();
    cs.forEach(function (r) { sel.appendChild(h("option", {value: String(r), text: D.cases[r].n})); });
    if (!cs.length) sel.appendChild(h("option", {value: "", text: "(none)"}));
    D.envs.forEach(function (e) { envSel.appendChild(h("option", {value: e, text: e})); });
    // start on an environment where the first case has a pair to compare
    var pickEnv = function () {
      var r = sel.value;
      if (r === "" || adaptersIn(r, envSel.value) > 1) return;
      var best = D.envs.slice().sort(function (a, b) { return adaptersIn(r, b) - adaptersIn(r, a); })[0];
      if (best !== undefined) envSel.value = best;
    };
    pickEnv();
    sel.addEventListener("change", function () { pickEnv(); renderPortability(); });
    [envSel, $("#p-q")].forEach(function (s) { s.addEventListener("change", renderPortability); });
  }

  /* -- start ------------------------------------------------------------------------------- */
  function start() {
    colStyle = document.createElement("style");
    document.head.appendChild(colStyle);
    loadData().then(function (data) {
      D = data;
      bindFilters();
      bindSorting();
      bindDetail();
      initPortability();
      applyFilters();
      document.body.setAttribute("data-ready", "1");
    }).catch(function (err) {
      var b = h("div", {cls: "banner warn", text: "The report's data could not be read: " + err.message});
      document.body.insertBefore(b, document.body.firstChild);
      document.body.setAttribute("data-ready", "error");
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
