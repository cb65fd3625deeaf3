/* Figures that fit their column (mi-dsl report; analyses/_figures.py writes the figures).

   miDslFit(fig, width): a plotly figure {data, layout} made to fit `width` pixels.
   - An ordinary figure: its width is left to plotly (autosize), its height kept (450 px unless given).
   - Small multiples (layout.meta.small_multiples, from _figures.small_multiples): as many
     square panels per row as fit (at least cell_min px each, at most `columns`), so they wrap
     instead of overflowing; one x axis per column (tick labels under its lowest panel), one y
     axis per row (tick labels at the left); each panel titled. The same layout as
     _figures.lay_out_panels computes for a fixed width.
   miDslSetPanels(fig, labels, panels): the same small multiples with other z values and tick
     labels (the attention browser's prompt picker). */
function miDslAxis(letter, index) { return letter + 'axis' + (index ? index + 1 : ''); }
function miDslRef(letter, index) { return letter + (index ? index + 1 : ''); }

function miDslFit(fig, width) {
  var layout = fig.layout;
  var sm = layout.meta && layout.meta.small_multiples;
  delete layout.width;
  layout.autosize = true;
  if (!layout.height) layout.height = 450;  // plotly's default; autosize would take the (empty) container's
  if (!sm) return fig;
  var m = layout.margin, gap = sm.gap, count = sm.count;
  var usable = Math.max(sm.cell_min, width - m.l - m.r);
  var columns = Math.max(1, Math.min(count, sm.columns, Math.floor((usable + gap) / (sm.cell_min + gap))));
  var rows = Math.ceil(count / columns);
  var cell = Math.min(sm.cell_max, (usable - (columns - 1) * gap) / columns);
  var height = rows * cell + (rows - 1) * gap;
  Object.keys(layout).forEach(function (key) { if (/^[xy]axis\d*$/.test(key)) delete layout[key]; });
  layout.height = height + m.t + m.b;
  layout.annotations = [];
  var step = Math.max(1, Math.ceil(12 * sm.xaxis.tickvals.length / cell));  // labels at least 12 px apart
  function thinned(axis) {
    var out = Object.assign({}, axis);
    out.tickvals = axis.tickvals.filter(function (_, i) { return i % step === 0; });
    out.ticktext = axis.ticktext.filter(function (_, i) { return i % step === 0; });
    return out;
  }
  for (var c = 0; c < columns; c++) {
    var lastRow = Math.floor((count - 1 - c) / columns), x0 = c * (cell + gap) / usable;
    layout[miDslAxis('x', c)] = Object.assign(thinned(sm.xaxis), {
      domain: [x0, Math.min(1, x0 + cell / usable)], anchor: miDslRef('y', lastRow), title: {text: c === 0 ? sm.x_title : ''}});
  }
  for (var r = 0; r < rows; r++) {
    var top = 1 - r * (cell + gap) / height;
    layout[miDslAxis('y', r)] = Object.assign(thinned(sm.yaxis), {
      domain: [Math.max(0, top - cell / height), top], anchor: 'x', title: {text: r === 0 ? sm.y_title : ''}});
  }
  sm.titles.forEach(function (name, i) {
    var row = Math.floor(i / columns), col = i % columns, x0 = col * (cell + gap) / usable;
    fig.data[i].xaxis = miDslRef('x', col);
    fig.data[i].yaxis = miDslRef('y', row);
    layout.annotations.push({text: name, x: x0 + cell / usable / 2, y: 1 - row * (cell + gap) / height,
      xref: 'paper', yref: 'paper', xanchor: 'center', yanchor: 'bottom', showarrow: false, font: {size: 12}});
  });
  return fig;
}

function miDslSetPanels(fig, labels, panels) {
  var sm = fig.layout.meta.small_multiples;
  var ticks = labels.map(function (_, i) { return i; });
  [sm.xaxis, sm.yaxis].forEach(function (axis) { axis.tickvals = ticks; axis.ticktext = labels; });
  panels.forEach(function (z, i) {
    fig.data[i].z = z;
    fig.data[i].customdata = z.map(function (_, q) { return z.map(function (_, k) { return [labels[q], labels[k]]; }); });
  });
  return fig;
}

/* Redraw small multiples when their container changes width (plotly's own `responsive` resizes
   ordinary figures). */
function miDslWatch(target, fig) {
  var width = target.clientWidth;
  if (!(fig.layout.meta && fig.layout.meta.small_multiples) || typeof ResizeObserver === 'undefined') return;
  new ResizeObserver(function () {
    if (Math.abs(target.clientWidth - width) < 2) return;
    width = target.clientWidth;
    miDslFit(fig, width);
    Plotly.react(target, fig.data, fig.layout);
  }).observe(target);
}
