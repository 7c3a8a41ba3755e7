/* Start: read the data blob, then bind every control. Without the blob the matrix still reads. */
function start() {
  colStyle = document.createElement("style");
  document.head.appendChild(colStyle);
  loadData().then(function (data) {
    setData(data);
    bindFilters();
    bindSorting();
    bindDetail();
    initPortability();
    applyFilters();
    document.body.setAttribute("data-ready-ms", String(Math.round(performance.now())));  // read by the browser self-test
    document.body.setAttribute("data-ready", "1");
  }).catch(function (err) {
    var b = h("div", {cls: "banner warn", text: "The report's data could not be read: " + err.message});
    document.body.insertBefore(b, document.body.firstChild);
    document.body.setAttribute("data-ready", "error");
  });
}
if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
else start();
