/* The data blob (harness/report/blob.py) and the lookups built from its tables: the page has no
   vocabulary of its own. A result record is a row whose columns are named by D.fields.result:
   r[F.max_ulp_err]. A column past the end of a row is empty. */
var D = null;      // the blob
var F = null;      // result column name -> position in a row
var V = null;      // verdict name -> its row of Verdict.table() (severity, fails_run, differs, shows_error, mark, meaning)
var QI = null;     // quantity name -> position in D.quantities

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

function setData(data) {
  D = data;
  F = index(D.fields.result);
  V = {};
  D.verdicts.forEach(function (v) { V[v.name] = v; });
  QI = index(D.quantities);
}

function cellKey(r, c) { return r + ":" + c; }
function verdictAt(i) { return D.verdicts[i]; }  // the blob stores verdicts as positions in D.verdicts
function severity(name) { return V[name].severity; }
/* what the "not pass" filter shows: a verdict that fails the run or differs from the oracle */
function needsAttention(name) { return V[name].fails_run || V[name].differs; }
function matrixText(name, ulp) { return V[name].shows_error && ulp !== null ? fmtUlp(ulp) : V[name].mark; }

/* per-quantity view of a cell: the worst verdict and largest ULP error of that quantity ("none": not recorded) */
function cellView(key, qname) {
  var cell = D.cells[key];
  if (!cell) return null;
  if (!qname) return {v: verdictAt(cell.verdict).name, u: toNum(cell.max_ulp)};
  var qi = QI[qname];
  var rs = cell.results.filter(function (r) { return r[F.quantity] === qi; });
  if (!rs.length) {
    if (!cell.results.length && cell.outcome) return {v: verdictAt(cell.outcome.verdict).name, u: null};
    return {v: "none", u: null};
  }
  var worst = D.verdicts[0], u = null;
  rs.forEach(function (r) {
    var v = verdictAt(r[F.verdict]);
    if (v.severity > worst.severity) worst = v;
    var x = toNum(r[F.max_ulp_err]);
    if (x !== null && !isNaN(x) && (u === null || x > u)) u = x;
  });
  return {v: worst.name, u: u};
}
