/* The cell detail drawer: outcome, every quantity's metrics, the ledger, settings, the case, a reproducer. */
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

function verdictBadge(v) { return h("span", {cls: "verdict v-" + v.name, text: v.name, title: v.meaning}); }

function outcomeSection(o) {
  var v = verdictAt(o.verdict);
  var out = [h("h3", {text: "Outcome"}), h("p", null, verdictBadge(v), " " + (o.message || ""))];
  if (o.exception_type) out.push(kvTable([["exception", o.exception_type], ["message", o.exception_message], ["during", o.exception_stage]]));
  if (o.exit_code !== undefined) out.push(kvTable([["exit code", o.exit_code]]));
  if (o.stderr_tail) out.push(h("div", {cls: "sub", text: "stderr tail"}), h("pre", {cls: "wrap", text: o.stderr_tail}));
  return out;
}

var QUANTITY_HEAD = ["step", "quantity", "verdict", "err/bound", "vs stable", "ULP", "max abs", "max rel", "threshold", "worst index", "expected", "observed", "mismatched"];

/* a row's error over its bound, or the kind of a difference without a ratio */
function ratioCell(r, kind) {
  if (kind && !kind.bounded) return h("td", {cls: "num", title: kind.headline + ": no ratio", text: kind.mark});
  var x = toNum(r[F.error_ratio]);
  return h("td", {cls: "num", title: x === null ? null : "error / bound at the worst element: " + fmt(x, 3), text: fmt(r[F.error_ratio], 3)});
}

/* one result row: its table row, and a second row for what the columns do not say */
function quantityRows(r) {
  var v = verdictAt(r[F.verdict]);
  var q = r[F.quantity] != null ? D.quantities[r[F.quantity]] : null;
  var qname = q ? q.name : (r[F.covers] || []).join("|");
  var bad = needsAttention(v.name);
  var kind = r[F.mismatch_kind] != null ? D.kinds[r[F.mismatch_kind]] : null;
  var step = r[F.step] != null ? String(r[F.step]) : (q ? q.phase : "");
  var cells = [
    h("td", {text: step}),
    h("td", {text: qname, title: q ? q.stage : "the quantities this ledger entry covers"}),
    h("td", {cls: "v-" + v.name, title: kind ? kind.headline : v.meaning, text: v.name + (kind && kind.note ? " (" + kind.name + ")" : "")}),
    ratioCell(r, kind),
    h("td", {cls: "num", title: r[F.weak_ratio] == null ? null : "max |diff| over a stable BN's in the same precision (" +
      fmt(r[F.stable_abs_err], 3) + ", harness.stable) plus one ulp: weak above " + D.weak_factor, text: fmt(r[F.weak_ratio], 3)}),
    h("td", {cls: "num", text: fmtUlp(toNum(r[F.max_ulp_err]))}),
    h("td", {cls: "num", text: fmt(r[F.max_abs_err], 3)}), h("td", {cls: "num", text: fmt(r[F.max_rel_err], 3)}),
    h("td", {cls: "num", text: fmt(r[F.threshold], 3)}), h("td", {cls: "num", text: fmtIndex(r[F.worst_index])}),
    h("td", {cls: "num", text: fmt(r[F.expected], bad ? 9 : 6)}), h("td", {cls: "num", text: fmt(r[F.observed], bad ? 9 : 6)}),
    h("td", {cls: "num", text: r[F.total] ? (r[F.mismatched] || 0) + " / " + r[F.total] : ""})
  ];
  var rows = [h("tr", {cls: bad ? "bad" : null, "data-q": qname}, cells)];
  var notes = [];
  if (r[F.greatest_abs_diff] != null) {
    notes.push("over the " + (r[F.mismatched] || 0) + " mismatched elements: greatest |diff| " + fmt(r[F.greatest_abs_diff], 6) +
      " at " + fmtIndex(r[F.greatest_abs_index]) + ", greatest relative diff " + fmt(r[F.greatest_rel_diff], 3) +
      " at " + fmtIndex(r[F.greatest_rel_index]));
  }
  if (r[F.message]) notes.push(r[F.message]);
  if (notes.length) rows.push(h("tr", {cls: "msg"}, h("td", {colspan: QUANTITY_HEAD.length, text: notes.join("; ")})));
  return rows;
}

function ledgerSection(ids) {
  var out = [h("h3", {text: "Ledger (cases/known_differences.toml)"})];
  ids.forEach(function (id) {
    var e = D.ledger[id] || {};
    var link = e.link ? h("a", {href: e.link, target: "_blank", rel: "noopener noreferrer", text: e.link})
                      : (e.raw_link ? h("span", {text: e.raw_link + " (not an http(s) link)"}) : null);
    out.push(h("div", {cls: "ledger"},
      h("p", null, h("b", {text: id}), " · " + (e.kind || "") + (e.versions ? " · versions " + e.versions : "")),
      h("p", null, h("b", {text: "reason: "}), e.reason || ""),
      e.observed ? h("p", null, h("b", {text: "observed: "}), e.observed) : null,
      link ? h("p", null, h("b", {text: "link: "}), link) : null));
  });
  return out;
}

function quantitiesSection(results) {
  var rows = [], ledgers = [];
  results.forEach(function (r) {
    rows = rows.concat(quantityRows(r));
    var id = r[F.ledger];
    if (id && ledgers.indexOf(id) < 0) ledgers.push(id);
  });
  var out = [h("h3", {text: "Quantities (" + results.length + ")"}),
    h("div", {cls: "table-wrap"}, h("table", {cls: "data q"},
      h("thead", null, h("tr", null, QUANTITY_HEAD.map(function (x) { return h("th", {text: x}); }))),
      h("tbody", null, rows)))];
  return ledgers.length ? out.concat(ledgerSection(ledgers)) : out;
}

function settingsSection(cell, adapter, params) {
  var conv = cell.conventions !== undefined ? D.conventions[cell.conventions] : null;
  var set = cell.settings || {}, eff = cell.effective || {};
  var out = [h("h3", {text: "Conventions and settings"})];
  if (conv || cell.settings) {
    out.push(kvTable([
      ["momentum as passed to " + adapter, set.momentum === null ? "None (cumulative average)" : set.momentum],
      ["momentum style", conv ? conv.momentum_style : null],
      ["momentum, weight of the new statistic", eff.momentum],
      ["eps", set.eps],
      ["channel axis", set.axis],
      ["running variance estimator", conv ? conv.running_var_estimator : null],
      ["framework defaults (momentum, eps)", conv ? fmtParam(conv.default_momentum) + ", " + fmtParam(conv.default_eps) : null],
      ["native layout", conv ? conv.native_layout : null],
      ["one value per channel in training", conv ? conv.single_value_training : null],
      ["eps = 0 in training", conv ? conv.zero_eps_training : null],
      ["precision (declared dtypes)", cell.precision && Object.keys(cell.precision).length ? cell.precision : null],
      ["training flags", set.training_flags && Object.keys(set.training_flags).length ? set.training_flags : null],
      ["use_defaults (the case)", params.use_defaults ? "true: each framework's own defaults" : null],
      ["notes", conv ? conv.notes : null]
    ]));
  } else out.push(h("p", {cls: "empty", text: "no settings recorded (the cell was skipped or did not finish)"}));
  if (cell.info && Object.keys(cell.info).length) {
    out.push(h("h3", {text: "What the adapter reports"}),
      kvTable(Object.keys(cell.info).map(function (k) { return [k, cell.info[k]]; })));
  }
  return out;
}

function reproScript(caseRow, col) {
  var tmpl = D.templates[col.template];
  if (!tmpl || !caseRow.params_json) return null;
  return tmpl.replace(D.placeholder, caseRow.params_json);
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

function reproduceSection(cell, row, col) {
  var out = [h("h3", {text: "Reproduce"}),
    h("pre", {cls: "wrap", text: "bnparity repro " + row.name + " " + col.adapter + " > repro.py && python repro.py" +
      (cell.repro ? "\n" + cell.repro : "")})];
  var script = reproScript(row, col);
  if (!script) return out.concat([h("p", {cls: "empty", text: "no reproducer: the case parameters were not recorded"})]);
  var status = h("span", {cls: "ok"});
  var blobUrl = URL.createObjectURL(new Blob([script], {type: "text/x-python"}));
  return out.concat([
    h("div", {cls: "actions"},
      h("button", {type: "button", id: "copy-repro", text: "Copy script", on: {click: function () {
        copyText(script, function (ok) { status.textContent = ok ? "copied" : "select the text below and copy it"; });
      }}}),
      h("a", {href: blobUrl, download: "repro_" + row.name + "_" + col.adapter + ".py", text: "Download .py"}),
      status),
    h("pre", {id: "repro-script", text: script})]);
}

function openDetail(key) {
  var cell = D.cells[key];
  if (!cell) return;
  current = key;
  markSelected();
  var p = key.split(":");
  var row = D.cases[+p[0]], col = D.cols[+p[1]];
  var params = row.params_json ? JSON.parse(row.params_json) : {};
  var body = $("#d-body");
  body.textContent = "";
  $("#d-title").textContent = "";
  $("#d-title").appendChild(h("span", null, row.name + " × " + col.adapter + " ", h("span", {cls: "sub", text: "@ " + col.env})));
  var hl = headline(cell.results);
  var worst = hl.k !== null ? D.kinds[hl.k].headline : "worst error/bound " + (hl.r === null ? "n/a" : fmt(hl.r, 3));
  var parts = [h("p", null, verdictBadge(verdictAt(cell.verdict)),
    " " + worst + " · worst error " + (fmtUlp(toNum(cell.max_ulp)) || "n/a") + " ulp",
    cell.framework_version ? " · " + col.adapter + " framework " + cell.framework_version : "",
    cell.status ? " · worker " + cell.status : "")];
  if (row.description) parts.push(h("p", {cls: "sub", text: row.description}));
  if (cell.start) parts.push(h("h3", {text: "Where it starts"}), h("div", {cls: "start", text: cell.start}));
  if (cell.outcome) parts = parts.concat(outcomeSection(cell.outcome));
  if (cell.results.length) parts = parts.concat(quantitiesSection(cell.results));
  parts = parts.concat(settingsSection(cell, col.adapter, params));
  parts.push(h("h3", {text: "Case parameters"}));
  if (row.params_json) {
    parts.push(kvTable(Object.keys(params).filter(function (k) { return k !== "description"; })
      .map(function (k) { return [k, params[k]]; })));
  } else parts.push(h("p", {cls: "empty", text: "not recorded (no cell record for this case)"}));
  parts = parts.concat(reproduceSection(cell, row, col));
  parts.forEach(function (el) { body.appendChild(el); });
  var drawer = $("#detail");
  drawer.hidden = false;
  drawer.scrollTop = 0;
}

function closeDetail() { $("#detail").hidden = true; current = null; markSelected(); }

/* a matrix cell's tooltip: the blob keeps what follows the verdict (Builder.cell_tip) */
function cellTitle(key) {
  var cell = D.cells[key], p = key.split(":"), col = D.cols[+p[1]];
  return D.cases[+p[0]].name + " \u00d7 " + col.adapter + " @ " + col.env + ": " + verdictAt(cell.verdict).name + (cell.tip || "");
}

function bindDetail() {
  $("#matrix-table").addEventListener("mouseover", function (ev) {
    var td = ev.target.closest("td[data-c]");
    if (!td || td.hasAttribute("title")) return;
    var key = cellKey(td.parentNode.getAttribute("data-r"), td.getAttribute("data-c"));
    if (D.cells[key]) td.setAttribute("title", cellTitle(key));
  });
  $("#matrix-table").addEventListener("click", function (ev) {
    var td = ev.target.closest("td[data-c]");
    if (!td || td.classList.contains("none")) return;
    openDetail(cellKey(td.parentNode.getAttribute("data-r"), td.getAttribute("data-c")));
  });
  document.addEventListener("click", function (ev) {
    var el = ev.target.closest("table.clickable [data-key]");
    if (el && !ev.target.closest("a")) openDetail(el.getAttribute("data-key"));
  });
  $("#d-close").addEventListener("click", closeDetail);
  document.addEventListener("keydown", function (ev) { if (ev.key === "Escape") closeDetail(); });
}
