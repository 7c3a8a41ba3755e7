/* Portability: how far apart two adapters' outputs can be on one case (a bound from the recorded
   errors and the oracle gap between their settings; harness/report/gaps.py says why). */
function errsByStep(cell, qi) {
  var out = {};
  cell.results.forEach(function (r) {
    if (r[F.quantity] === qi) out[r[F.step] == null ? "" : String(r[F.step])] = toNum(r[F.max_abs_err]);
  });
  return out;
}

function gapKey(qname, step) { return qname + "@" + step; }  // mirrors harness.report.gaps.gap_key

function pairBound(row, ka, kb, qname) {
  var a = D.cells[ka], b = D.cells[kb];
  var qi = QI[qname];
  var ea = errsByStep(a, qi), eb = errsByStep(b, qi);
  var steps = Object.keys(ea).filter(function (s) { return s in eb; });
  if (!steps.length) return {text: "—", title: "no " + qname + " in one of the two (raised, crashed or skipped)"};
  var gapsCase = D.gaps[String(row)];
  var gapOf = function () { return 0; }, differs = false;
  if (a.oracle !== undefined && b.oracle !== undefined && a.oracle !== b.oracle) {
    differs = true;
    var i = Math.min(a.oracle, b.oracle), j = Math.max(a.oracle, b.oracle);
    var d = gapsCase && gapsCase.oracle_gaps ? gapsCase.oracle_gaps[i + "," + j] : null;
    if (!d) return {text: "by convention", title: "different settings; the oracle could not be rebuilt here", cls: "conv"};
    gapOf = function (s) { return toNum(d[gapKey(qname, s)]); };
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

function adaptersIn(r, env) {
  var n = 0;
  D.cols.forEach(function (col, ci) { if (col.env === env && D.cells[cellKey(r, ci)]) n++; });
  return n;
}

/* the cases that ran on two or more adapters in one environment */
function portabilityCases() {
  var out = [];
  D.cases.forEach(function (c, r) {
    if (D.envs.some(function (e) { return adaptersIn(r, e) > 1; })) out.push(r);
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
  D.cols.forEach(function (col, ci) { if (col.env === env && D.cells[cellKey(r, ci)]) cols.push(ci); });
  if (cols.length < 2) { out.appendChild(h("p", {cls: "empty", text: "Fewer than two adapters ran this case in " + env + "."})); return; }
  var head = h("tr", null, h("th", {text: D.cases[+r].name + " · " + q}), cols.map(function (ci) { return h("th", {text: D.cols[ci].adapter}); }));
  var body = cols.map(function (ca) {
    return h("tr", null, h("th", {text: D.cols[ca].adapter}), cols.map(function (cb) {
      if (ca === cb) return h("td", {cls: "sub", text: "·"});
      var b = pairBound(r, cellKey(r, ca), cellKey(r, cb), q);
      return h("td", {cls: b.cls || null, title: b.title, text: b.text});
    }));
  });
  out.appendChild(h("table", {cls: "data", id: "p-table"}, h("thead", null, head), h("tbody", null, body)));
}

function initPortability() {
  var sel = $("#p-case"), envSel = $("#p-env");
  var cs = portabilityCases();
  cs.forEach(function (r) { sel.appendChild(h("option", {value: String(r), text: D.cases[r].name})); });
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
