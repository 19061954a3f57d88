// One slimkit figure, drawn with plotly.js (the anywidget front end of plot_widget.py).
//
// The figure's JSON ("spec": data + layout) lives in the widget model, so a view made after a
// page reload, or in a second tab, draws the same data, and each new spec redraws it (at most
// once per animation frame). plotly.js is the installed plotly package's own file, gzipped in
// one shared model ("lib") and evaluated once per page: no CDN, no copy per figure. Colours
// follow JupyterLab's theme (its CSS variables), dark included, and change with it.

const KEY = Symbol.for("slimkit.plotly");
const CONFIG = {displaylogo: false, modeBarButtonsToRemove: ["select2d", "lasso2d"]};
const AXIS = /^[xy]axis\d*$/;

function loadPlotly(model) {
  if (!globalThis[KEY]) {
    globalThis[KEY] = (async () => {
      const ref = model.get("lib");  // "IPY_MODEL_<id>" (no deserializer), or the model itself
      const lib = typeof ref === "string" ? await model.widget_manager.get_model(ref.replace(/^IPY_MODEL_/, "")) : ref;
      const gz = new Blob([lib.get("source")]).stream().pipeThrough(new DecompressionStream("gzip"));
      const source = await new Response(gz).text();
      // the UMD bundle fills module.exports; it also sets window.Plotly: a page's own one stays
      const module = {exports: {}};
      const had = "Plotly" in globalThis, page = globalThis.Plotly;
      new Function("module", "exports", source)(module, module.exports);
      if (had) globalThis.Plotly = page;
      return module.exports;
    })();
    globalThis[KEY].catch(() => delete globalThis[KEY]);  // a later view tries again
  }
  return globalThis[KEY];
}

function themed(layout) {
  const css = getComputedStyle(document.body);
  const dark = document.body.dataset.jpThemeLight === "false";
  const get = (name, fallback) => css.getPropertyValue(name).trim() || fallback;
  const fg = get("--jp-ui-font-color1", dark ? "#e6e6e6" : "#1f1f1f");
  const grid = get("--jp-border-color2", dark ? "#3a3a3a" : "#e0e0e0");
  const font = {...(layout.font || {}), color: fg};
  const family = get("--jp-ui-font-family", "");
  if (family) font.family = family;
  const out = {...layout, font, paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
               legend: {bgcolor: "rgba(0,0,0,0)", ...(layout.legend || {})}};
  for (const key of new Set(["xaxis", "yaxis", ...Object.keys(layout).filter(k => AXIS.test(k))])) {
    out[key] = {gridcolor: grid, zerolinecolor: grid, linecolor: grid, ...(layout[key] || {})};
  }
  return out;
}

function render({model, el}) {
  const div = document.createElement("div");
  div.className = "slimkit-plot";
  div.style.width = "100%";
  el.appendChild(div);
  let Plotly = null, frame = 0, alive = true, hooked = false;

  const click = ev => {
    const p = ev.points && ev.points[0];
    // the point's own id (customdata) too: the figure may have changed since it was drawn
    if (p) model.send({event: "click", trace: p.curveNumber, point: p.pointNumber, id: p.customdata ?? null});
  };
  const draw = () => {
    frame = 0;
    if (!alive || !Plotly) return;
    const spec = structuredClone(model.get("spec") || {});  // plotly.js writes into what it draws
    Plotly.react(div, spec.data || [], themed(spec.layout || {}), CONFIG);
    if (!hooked) {
      hooked = true;
      div.on("plotly_click", click);
    }
  };
  const later = () => { if (!frame) frame = requestAnimationFrame(draw); };
  const resize = () => { if (alive && Plotly && div._fullLayout) Plotly.Plots.resize(div); };

  loadPlotly(model).then(P => { Plotly = P; later(); },
                         err => { div.textContent = `slimkit: plotly.js did not load (${err})`; });
  model.on("change:spec", later);
  const theme = new MutationObserver(later);
  theme.observe(document.body, {attributes: true, attributeFilter: ["data-jp-theme-light", "data-jp-theme-name"]});
  const sized = new ResizeObserver(() => requestAnimationFrame(resize));
  sized.observe(el);
  return () => {
    alive = false;
    theme.disconnect();
    sized.disconnect();
    if (frame) cancelAnimationFrame(frame);
    if (Plotly) Plotly.purge(div);
  };
}

export default {render};
