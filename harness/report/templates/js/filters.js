/* Filters: adapter, environment, verdict, tag, quantity and free text, over the matrix and the sections. */
var state = {adapter: "", env: "", verdict: "", tag: "", quantity: "", text: ""};
var colStyle = null;

function verdictMatches(v) {
  var f = state.verdict;
  if (!f) return true;
  if (v === "none") return false;
  if (f === "attention") return needsAttention(v);
  if (f === "failing") return V[v].fails_run;
  return v === f;
}

function visibleCols() {
  return D.cols.map(function (c) {
    return (!state.env || c.env === state.env) && (!state.adapter || c.adapter === state.adapter);
  });
}

/* the matrix cells show the worst verdict and error/bound of the quantity chosen (all: the cell's own) */
function paintMatrix() {
  var q = state.quantity;
  $$("#matrix-table tbody tr[data-r]").forEach(function (tr) {
    var r = tr.getAttribute("data-r");
    $$("td", tr).forEach(function (td) {
      var view = cellView(cellKey(r, td.getAttribute("data-c")), q);
      if (!view) return;
      td.className = view.v === "none" ? "none" : "v-" + view.v;
      td.textContent = view.v === "none" ? "" : matrixText(view);
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
    D.cols.forEach(function (c, i) { if (c.env === env && vis[i]) n++; });
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
        var v = cellVerdict(cellKey(r, c), state.quantity);
        var m = v !== null && v !== "none" && verdictMatches(v);
        if (v !== null && v !== "none") anyCell = true;
        if (m) anyMatch = true;
        td.classList.toggle("dim", !!state.verdict && v !== null && !m);
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
