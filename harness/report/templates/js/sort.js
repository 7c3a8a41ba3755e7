/* Sorting: the matrix by a column (worst first) or by case name, and every table.sortable by a header. */
var sortState = {key: null, dir: 1};

function sortMatrix(key, dir) {
  sortState = {key: key, dir: dir};
  $$("#matrix-table thead th.sorter").forEach(function (th) { th.removeAttribute("aria-sort"); });
  var th = key === "name" ? $("#matrix-table th.case-h") : $('#matrix-table th.ad-h[data-c="' + key + '"]');
  if (th) th.setAttribute("aria-sort", dir > 0 ? "ascending" : "descending");
  $$("#matrix-table tbody").forEach(function (tb) {
    var keyed = $$("tr[data-r]", tb).map(function (tr) {
      var r = tr.getAttribute("data-r");
      var k;
      if (key === "name") k = [D.cases[+r].name.toLowerCase()];
      else {
        var view = cellView(cellKey(r, key), state.quantity);
        // worst first: severity, then the number the cell shows (error/bound; a kind without a ratio
        // above every ratio); "not run" last whichever way
        k = view === null || view.v === "none" ? [-1, -2] : [severity(view.v), view.sort];
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

function sortTable(table, th, col) {
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
}

function bindSorting() {
  $$("#matrix-table thead th.sorter").forEach(function (th) {
    th.addEventListener("click", function () {
      var key = th.classList.contains("case-h") ? "name" : th.getAttribute("data-c");
      sortMatrix(key, sortState.key === key ? -sortState.dir : 1);
    });
  });
  $$("table.sortable").forEach(function (table) {
    $$("thead th", table).forEach(function (th, col) {
      th.addEventListener("click", function () { sortTable(table, th, col); });
    });
  });
}
