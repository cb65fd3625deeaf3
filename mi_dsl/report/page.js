/* index.html's behaviour (report/page.py inlines it after analyses/small_multiples.js).

   - A plotly figure is drawn when its <details> opens (a figure drawn while hidden has no
     width), fitted to the column (miDslFit) and redrawn when the column changes width.
   - An embedded page (iframe) loads when its <details> opens, for the same reason, and takes
     its content's height, which the page posts (file:// pages cannot read each other).
   - A table.sortable sorts by a column when its header is clicked (numbers as numbers). */
function drawFigure(box) {
  if (box.dataset.drawn || typeof Plotly === 'undefined') return;
  var fig = JSON.parse(document.getElementById(box.dataset.fig).textContent);
  var target = box.querySelector('.plot');
  miDslFit(fig, target.clientWidth);
  Plotly.newPlot(target, fig.data, fig.layout, {responsive: true, displaylogo: false});
  miDslWatch(target, fig);
  box.dataset.drawn = '1';
}

function loadFrame(box) {
  var frame = box.querySelector('iframe[data-src]');
  if (frame && !frame.getAttribute('src')) frame.setAttribute('src', frame.dataset.src);
}

function opened(box) {
  if (!box.open) return;
  if (box.dataset.fig) drawFigure(box);
  loadFrame(box);
}

document.querySelectorAll('details').forEach(function (box) {
  opened(box);
  box.addEventListener('toggle', function () { opened(box); });
});

window.addEventListener('message', function (event) {
  var height = event.data && event.data.miDslFrameHeight;
  if (typeof height !== 'number') return;
  document.querySelectorAll('iframe').forEach(function (frame) {
    if (frame.contentWindow === event.source) frame.style.height = Math.ceil(height) + 4 + 'px';
  });
});

function sortTable(table, column, th) {
  var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
  var descending = th.dataset.sorted === 'asc';
  function key(row) {
    var text = row.cells[column].dataset.value !== undefined ? row.cells[column].dataset.value : row.cells[column].textContent;
    var number = parseFloat(text);
    return text.trim() !== '' && isFinite(text) ? number : text.toLowerCase();
  }
  rows.sort(function (a, b) {
    var x = key(a), y = key(b);
    if (typeof x !== typeof y) return typeof x === 'number' ? -1 : 1;
    return (x < y ? -1 : x > y ? 1 : 0) * (descending ? -1 : 1);
  });
  rows.forEach(function (row) { body.appendChild(row); });
  table.querySelectorAll('th').forEach(function (other) { delete other.dataset.sorted; });
  th.dataset.sorted = descending ? 'desc' : 'asc';
}

document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('thead th').forEach(function (th, column) {
    th.title = 'sort by this column';
    th.addEventListener('click', function () { sortTable(table, column, th); });
  });
});
