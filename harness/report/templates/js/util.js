/* bnparity report: DOM and number helpers. Everything taken from the data blob reaches the page
   through textContent, never as markup. */
var $ = function (s, el) { return (el || document).querySelector(s); };
var $$ = function (s, el) { return Array.prototype.slice.call((el || document).querySelectorAll(s)); };

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

/* {name: position} of a list of names, or of objects with a name */
function index(list) {
  var out = {};
  list.forEach(function (x, i) { out[typeof x === "string" ? x : x.name] = i; });
  return out;
}

/* a blob number: numbers, and the strings "nan" / "inf" / "-inf" JSON cannot hold */
function toNum(x) {
  if (x === null || x === undefined) return null;
  if (typeof x === "number") return x;
  if (x === "inf") return Infinity;
  if (x === "-inf") return -Infinity;
  if (x === "nan") return NaN;
  var f = parseFloat(x);
  return isNaN(f) ? null : f;
}

function fmtRatio(r, over) {  /* mirrors harness.report.text.fmt_ratio, float operation for float operation */
  if (r === null || r === undefined) return "";
  if (isNaN(r)) return "NaN";
  if (!isFinite(r)) return r > 0 ? "inf" : "-inf";
  if (r <= 0) return "0";
  if (r < 0.01) return "<.01";
  if (r < 1000) {
    var q = r < 0.1 ? 1000 : r < 1 ? 100 : r < 10 ? 10 : 1;
    var text = String(Math.floor(r * q + 0.5) / q);
    return over && text === "1" ? ">1" : text;
  }
  var e = 0;
  while (r >= 10) { r /= 10; e++; }
  var m = Math.floor(r + 0.5);
  if (m === 10) { m = 1; e++; }
  return m + "e" + e;
}

function fmtUlp(u) {  /* mirrors harness.report.text.fmt_ulp */
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

/* a setting as a person wrote it (mirrors harness.repro_runtime.num): 12 significant digits, then the
   shortest text that reads back as that number, in Python's repr form: 1 - 0.7 reads 0.3, 1e-05 */
function fmtSetting(v) {
  if (isNaN(v)) return "nan";
  if (!isFinite(v)) return v > 0 ? "inf" : "-inf";
  var x = Number(v.toPrecision(12));
  if (Number.isInteger(x) && Math.abs(x) < 1e16) return String(x);
  var p = x.toExponential().split("e"), e = +p[1];
  if (e < -4 || e >= 16) return p[0] + "e" + (e < 0 ? "-" : "+") + (Math.abs(e) < 10 ? "0" : "") + Math.abs(e);
  return String(x);
}

/* a value of the settings or the case parameters (mirrors harness.repro_runtime.settings_text inside
   lists and objects); a string or a number at the top level as it reads */
function fmtParam(v, inner) {
  if (v === null || v === undefined) return inner ? "null" : "";
  if (typeof v === "number") return fmtSetting(v);
  if (Array.isArray(v)) return "[" + v.map(function (x) { return fmtParam(x, true); }).join(", ") + "]";
  if (typeof v === "object") {
    return "{" + Object.keys(v).map(function (k) { return JSON.stringify(k) + ": " + fmtParam(v[k], true); }).join(", ") + "}";
  }
  return inner ? JSON.stringify(v) : String(v);
}

function fmtIndex(idx) { return idx ? "(" + idx.join(", ") + ")" : ""; }
