/* The data blob (harness/report/blob.py) and the lookups built from its tables: the page has no
   vocabulary of its own. A result record is a row whose columns are named by D.fields.result:
   r[F.error_ratio]. The blob ships the records column by column, a large page its numbers as byte planes
   (unpackColumn: D.rows[j](i) is row i's value); a cell's rows (cell.results) are built from its range of
   them (cell.rows = [start, count]) when first read. */
var D = null;      // the blob
var F = null;      // result column name -> position in a row
var V = null;      // verdict name -> its row of Verdict.table() (severity, fails_run, differs, shows_error, mark, meaning)
var QI = null;     // quantity name -> position in D.quantities

function gunzip(bytes) {
  var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  return new Response(stream).arrayBuffer().then(function (buf) { return new Uint8Array(buf); });
}

function loadData() {
  var el = document.getElementById("bn-data");
  var text = el.textContent;
  if (el.getAttribute("data-encoding") === "gzip+base120") {
    if (typeof DecompressionStream === "undefined") {
      return Promise.reject(new Error("this browser has no DecompressionStream: open the report in a current Chrome, Firefox or Safari"));
    }
    var n = +(el.getAttribute("data-planes") || 0);  // the records' planes (harness/report/packed.py), then the JSON
    var planes = n ? gunzip(b120decode(text.slice(0, n))) : Promise.resolve(null);
    return Promise.all([planes, gunzip(b120decode(text.slice(n)))]).then(function (got) {
      var data = JSON.parse(new TextDecoder().decode(got[1]));
      data.rows = data.rows.map(function (c) { return unpackColumn(c, got[0]); });
      return data;
    });
  }
  var data = JSON.parse(text);
  data.rows = data.rows.map(function (c) { return unpackColumn(c, null); });
  return Promise.resolve(data);
}

/* a column of the records as a function of the row: a JSON list as it is, or a packed column read from its
   byte planes when a row is asked for (harness/report/packed.py says the layout; decode_column there is this
   in Python) */
var P10 = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17,
           1e18, 1e19, 1e20, 1e21, 1e22];  // exact doubles: m / 10^-e and m * 10^e are the numbers JSON reads
function unpackColumn(c, bin) {
  if (Array.isArray(c)) return function (i) { return c[i]; };
  var n = c.n, at = c.at, x = c.x;
  function plane(j, len) { return bin.subarray(at + j, at + j + len); }
  if (c.c === "num") {
    var base = P10[c.k - 1], e0 = c.e0, hb = c.h;  // hb: the mantissa's high byte is in the code byte (hb values)
    var t = hb ? plane(n, n) : plane(0, n), lo = hb ? plane(0, n) : plane(n, n), hi = hb ? null : plane(2 * n, n);
    return function (i) {
      var k = t[i];
      if (k >= 4) {
        var s = k - 4, high;
        if (hb) { high = s % hb; s = (s - high) / hb; } else high = hi[i];
        var e = (s >> 1) + e0, m = base + lo[i] + 256 * high, v = e < 0 ? m / P10[-e] : m * P10[e];
        return s & 1 ? -v : v;
      }
      return k === 0 ? null : k === 1 ? x[i] : k === 2 ? "=" : 0;
    };
  }
  var w = c.w, b;
  if (c.c === "int") {
    var planes = [];
    for (b = 0; b < w; b++) planes.push(plane(b * n, n));
    return function (i) {
      var code = 0;
      for (var j = w - 1; j >= 0; j--) code = code * 256 + planes[j][i];
      return code === 0 ? null : code === 1 ? x[i] : code - 2;
    };
  }
  var lens = plane(0, n), total = c.len, vals = [], start = null;  // "idx": lists of integers
  for (b = 0; b < w; b++) vals.push(plane(n + b * total, total));
  return function (i) {
    var k = lens[i];
    if (k === 0) return null;
    if (k === 1) return x[i];
    if (start === null) {  // where each row's elements start, once
      start = new Uint32Array(n);
      for (var r = 0, p = 0; r < n; r++) { start[r] = p; if (lens[r] > 1) p += lens[r] - 2; }
    }
    var out = new Array(k - 2);
    for (var q = 0; q < k - 2; q++) {
      var v = 0;
      for (var j = w - 1; j >= 0; j--) v = v * 256 + vals[j][start[i] + q];
      out[q] = v;
    }
    return out;
  };
}

/* harness/report/base120.py: the one-byte characters less whitespace and "<", 7 characters per 6 bytes (a 48-bit
   number, base-120 digits most significant first; the last r bytes r + 1 characters) */
function b120decode(text) {
  var digit = new Uint8Array(128), n = text.length, i, j, k;
  for (i = 1, k = 0; i < 128; i++) if (!(i >= 9 && i <= 13) && i !== 32 && i !== 60) digit[i] = k++;
  var rest = n % 7, size = Math.floor(n / 7) * 6 + (rest ? rest - 1 : 0), out = new Uint8Array(size), o = 0;
  for (i = 0; i + 7 <= n; i += 7) {
    var v = 0;
    for (j = i; j < i + 7; j++) v = v * 120 + digit[text.charCodeAt(j)];  // < 120^7 < 2^53: exact
    var hi = Math.floor(v / 16777216), lo = v - hi * 16777216;
    out[o++] = hi >>> 16; out[o++] = (hi >>> 8) & 255; out[o++] = hi & 255;
    out[o++] = lo >>> 16; out[o++] = (lo >>> 8) & 255; out[o++] = lo & 255;
  }
  if (rest) {
    var w = 0;
    for (j = i; j < n; j++) w = w * 120 + digit[text.charCodeAt(j)];
    for (j = size - 1; j >= o; j--) { out[j] = w % 256; w = Math.floor(w / 256); }
  }
  return out;
}

function setData(data) {
  D = data;
  F = index(D.fields.result);
  V = {};
  D.verdicts.forEach(function (v) { V[v.name] = v; });
  QI = index(D.quantities);
  Object.keys(D.cells).forEach(function (k) {
    Object.defineProperty(D.cells[k], "results", {get: cellRows});
  });
}

/* a cell's result rows (this: the cell), made from the columns once */
function cellRows() {
  if (this._rows) return this._rows;
  var cols = D.rows, start = this.rows[0], n = this.rows[1], out = new Array(n);
  for (var i = 0; i < n; i++) {
    var r = new Array(cols.length);
    for (var j = 0; j < cols.length; j++) r[j] = cols[j](start + i);
    if (r[F.observed] === "=") r[F.observed] = r[F.expected];  // blob.SAME_AS_EXPECTED
    out[i] = r;
  }
  Object.defineProperty(this, "_rows", {value: out});
  return out;
}

function cellKey(r, c) { return r + ":" + c; }
function verdictAt(i) { return D.verdicts[i]; }  // the blob stores verdicts as positions in D.verdicts
function severity(name) { return V[name].severity; }
/* what the "not pass" filter shows: a verdict that fails the run or differs from the oracle */
function needsAttention(name) { return V[name].fails_run || V[name].differs; }

/* what a cell shows for some of its result rows: mirrors harness.report.model.headline. r: the largest
   error/bound (as the blob rounds it); k: the worst kind of difference without a ratio (an index into
   D.kinds), shown instead; over: a row at the largest ratio differs from the oracle; sort: larger is worse */
function headline(rows) {
  var ratio = null, key = null, over = false, kind = null, weak = null;
  rows.forEach(function (r) {
    var w = toNum(r[F.weak_ratio]);
    if (w !== null && verdictAt(r[F.verdict]).shows_weak_ratio) weak = weak === null ? w : Math.max(weak, w);
    var ki = r[F.mismatch_kind];
    if (ki != null && !D.kinds[ki].bounded) {
      if (kind === null || ki > kind) kind = ki;
      return;
    }
    var x = toNum(r[F.error_ratio]);
    if (x === null) return;
    var kx = isNaN(x) ? Infinity : x;
    var differs = verdictAt(r[F.verdict]).differs;
    if (key === null || kx > key) { ratio = x; key = kx; over = differs; }
    else if (kx === key) over = over || differs;
  });
  return {r: ratio, k: kind, over: over, w: weak, sort: kind !== null ? Infinity : key === null ? -1 : key};
}

/* the matrix text of a view: mirrors the matrix in harness.report.views (Headline.text and .explains) */
function matrixText(view) {
  var info = V[view.v];
  if (info.shows_weak_ratio && view.w !== null && view.w !== undefined) return info.mark + fmtRatio(view.w, false);
  var text = view.k !== null ? D.kinds[view.k].mark : fmtRatio(view.r, view.over);
  var explains = text !== "" && (!info.differs || view.over || view.k !== null);
  return info.shows_error && explains ? text : info.mark;
}

/* the verdict name a matrix cell shows for a quantity (cellView's v; all quantities: the cell's own, read
   without building its rows, so that the page is ready without unpacking every record); null: no cell */
function cellVerdict(key, qname) {
  if (!qname) {
    var cell = D.cells[key];
    return cell ? verdictAt(cell.verdict).name : null;
  }
  var view = cellView(key, qname);
  return view ? view.v : null;
}

/* per-quantity view of a cell: the worst verdict and the headline of that quantity's rows ("none": not
   recorded); all quantities: the cell's own verdict and every row */
function cellView(key, qname) {
  var cell = D.cells[key];
  if (!cell) return null;
  var hl;
  if (!qname) {
    hl = headline(cell.results);
    hl.v = verdictAt(cell.verdict).name;
    return hl;
  }
  var qi = QI[qname];
  var rs = cell.results.filter(function (r) { return r[F.quantity] === qi; });
  if (!rs.length) {
    if (!cell.results.length && cell.outcome) return {v: verdictAt(cell.outcome.verdict).name, r: null, k: null, over: false, sort: -1};
    return {v: "none", r: null, k: null, over: false, sort: -1};
  }
  var worst = D.verdicts[0];
  rs.forEach(function (r) {
    var v = verdictAt(r[F.verdict]);
    if (v.severity > worst.severity) worst = v;
  });
  hl = headline(rs);
  hl.v = worst.name;
  return hl;
}
