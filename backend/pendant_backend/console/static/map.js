// The alarm's map: Natural Earth country outlines (world-atlas, served by the backend: no internet
// needed), or the force's own tiles when PENDANT_TILE_URL is set; on it the alarm's position with its
// accuracy circle, the trail (growing live while the alarm is open), or for a cell-only alarm the
// area of its cell. The position comes from /console/alarms/<n>/location.json, whose every call is
// recorded in the audit log with the dispatcher's name.
"use strict";

window.PendantMap = (() => {
  const el = document.getElementById("map");
  if (!el || !window.L) return null;
  const map = L.map(el, { zoomControl: true, attributionControl: true, preferCanvas: true, worldCopyJump: true });
  map.setView([20, 0], 2);
  const tileUrl = el.dataset.tileUrl;
  // The outline map shows countries and coasts, nothing closer: zooming further in would show an
  // empty field, so without a tile server the map stops at a zoom where the region is recognisable
  // and the text above the map gives the exact position.
  const closest = tileUrl ? 17 : 10;
  L.control.scale({ imperial: false }).addTo(map);
  if (tileUrl) {
    L.tileLayer(tileUrl, { maxZoom: 19, attribution: el.dataset.tileAttribution || "" }).addTo(map);
  }
  // The outlines are drawn in any case: with no tile server they are the map; with one they remain
  // when the tile server cannot be reached.
  fetch("/vendor/countries-50m.json")
    .then((answer) => answer.json())
    .then((world) => {
      const countries = topojson.feature(world, world.objects.countries);
      const borders = topojson.mesh(world, world.objects.countries, (a, b) => a !== b);
      L.geoJSON(countries, { style: { color: "#8a94a6", weight: 0.6, fillColor: "#eef1f5", fillOpacity: tileUrl ? 0 : 1 }, interactive: false }).addTo(map).bringToBack();
      L.geoJSON(borders, { style: { color: "#5c6677", weight: 1 }, interactive: false }).addTo(map);
      map.attributionControl.addAttribution("Outlines: Natural Earth");
      el.dataset.outlines = "loaded";
    })
    .catch(() => { el.dataset.outlines = "failed"; });

  const layers = L.layerGroup().addTo(map);
  const text = document.getElementById("position-text");
  const current = { alarm: null, lastPoint: null, trail: null, points: [], loading: false };

  function fmt(value) { return Number(value).toFixed(6); }

  function age(seconds) { return window.PendantConsole ? PendantConsole.ageText(seconds) : Math.round(seconds) + " s"; }

  function describe(data) {
    if (data.position) {
      const p = data.position;
      const taken = p.loc_time ? " · fix " + age(Date.now() / 1000 - p.loc_time) + " old" : "";
      return "<strong>" + fmt(p.lat) + ", " + fmt(p.lon) + "</strong> ±" + p.acc + " m (" + (p.loc_src || "gnss") + taken + ")";
    }
    if (data.cell && data.cell_area) {
      return "<strong>Cell area</strong> about " + (data.cell_area.range_m / 1000).toFixed(1) + " km around " +
        fmt(data.cell_area.lat) + ", " + fmt(data.cell_area.lon) + " · " + data.cell_text + " · from the " + data.cell_area.source;
    }
    if (data.cell) {
      return "<strong>Cell only:</strong> " + data.cell_text + ". " +
        (data.cell_db ? "This cell is not in the cell database." : "No cell database is configured (PENDANT_CELL_DB), so the area cannot be drawn.");
    }
    return "<strong>No position:</strong> the pendant had no fix and sent no cell.";
  }

  function draw(data) {
    layers.clearLayers();
    current.points = data.trail.map((p) => [p.lat, p.lon]);
    current.lastPoint = data.trail.length ? data.trail[data.trail.length - 1].id : null;
    const bounds = [];
    if (data.position) {
      const p = data.position;
      L.circle([p.lat, p.lon], { radius: Math.max(p.acc, 5), color: "#c0392b", weight: 2, fillOpacity: 0.15 }).addTo(layers);
      L.circleMarker([p.lat, p.lon], { radius: 7, color: "#fff", weight: 2, fillColor: "#c0392b", fillOpacity: 1 })
        .bindTooltip("Position at the press ±" + p.acc + " m").addTo(layers);
      bounds.push([p.lat, p.lon]);
    } else if (data.cell_area) {
      const c = data.cell_area;
      L.circle([c.lat, c.lon], { radius: c.range_m, color: "#d35400", weight: 2, dashArray: "6 6", fillOpacity: 0.12 })
        .bindTooltip("Area of cell " + data.cell_text + " (" + c.source + ")").addTo(layers);
      map.fitBounds(L.latLng(c.lat, c.lon).toBounds(c.range_m * 2.2), { maxZoom: closest });
    }
    current.trail = L.polyline(current.points, { color: "#1f5fbf", weight: 3 }).addTo(layers);
    for (const p of data.trail.slice(1)) addPoint(p);
    for (const p of current.points) bounds.push(p);
    if (bounds.length === 1) map.setView(bounds[0], Math.min(16, closest));
    else if (bounds.length > 1) map.fitBounds(bounds, { padding: [30, 30], maxZoom: closest });
    text.innerHTML = describe(data) + (data.trail.length > 1 ? " · trail of " + data.trail.length + " positions" : "");
    el.dataset.alarm = String(data.alarm);
    el.dataset.points = String(data.trail.length);
  }

  function addPoint(p) {
    L.circleMarker([p.lat, p.lon], { radius: 4, color: "#1f5fbf", fillColor: "#1f5fbf", fillOpacity: 0.9 })
      .bindTooltip(p.source + " " + p.at.slice(11, 19) + " UTC ±" + p.acc + " m").addTo(layers);
  }

  async function load(pk, after) {
    const url = "/console/alarms/" + pk + "/location.json" + (after !== null && after !== undefined ? "?after=" + after : "");
    const answer = await fetch(url, { headers: { Accept: "application/json" } });
    if (!answer.ok) {
      text.textContent = answer.status === 403 ? "Your roles do not allow seeing locations." : "The position could not be loaded (" + answer.status + ").";
      return null;
    }
    return answer.json();
  }

  async function show(pk, options) {
    if (!pk || (current.alarm === pk && !(options && options.reload))) return;
    current.alarm = pk;
    map.invalidateSize();
    const data = await load(pk, null);
    if (data && current.alarm === pk) draw(data);
  }

  async function update(pk) {
    if (pk !== current.alarm || current.loading) return;
    current.loading = true;
    try {
      const data = await load(pk, current.lastPoint);
      if (!data || current.alarm !== pk) return;
      for (const p of data.trail) {
        current.points.push([p.lat, p.lon]);
        addPoint(p);
        current.lastPoint = p.id;
      }
      if (current.trail) current.trail.setLatLngs(current.points);
      if (data.trail.length) {
        const last = data.trail[data.trail.length - 1];
        map.panTo([last.lat, last.lon]);
        el.dataset.points = String(current.points.length);
        text.innerHTML = describe(data) + " · trail of " + current.points.length + " positions, the last " + last.at.slice(11, 19) + " UTC";
      }
    } finally {
      current.loading = false;
    }
  }

  return { show, update, map };
})();
