// The console's live behaviour: one Server-Sent Events connection, the alarm alert and its sound,
// the "not live" banners, and reloading what a change touched. Pages are rendered by the server;
// this file only decides when to reload which part (with htmx) and what to say about the connection.
"use strict";

const PendantConsole = (() => {
  const STALE_MS = 4000;          // no event for this long (status comes every second): not live
  const RECONNECT_MS = [500, 1000, 2000, 4000, 8000];
  const body = document.body;
  const state = {
    source: null,
    live: false,
    lastEventAt: 0,
    lostAt: null,
    attempts: 0,
    reconnectTimer: null,
    selected: null,
    sessionEnded: false,
    queueTimer: null,
    fleetTimer: null,
    draft: null, // the resolve form's contents across a swap of the alarm view
  };

  // ---- what is on screen ---------------------------------------------------------------------

  function $(id) { return document.getElementById(id); }

  function show(id, text) {
    const el = $(id);
    if (!el) return;
    if (text !== undefined) el.textContent = text;
    el.hidden = false;
  }

  function hide(id) { const el = $(id); if (el) el.hidden = true; }

  function clock(date) { return date.toISOString().slice(11, 19) + " UTC"; }

  function ageText(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
    return Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h";
  }

  function tick() {
    const now = Date.now();
    for (const el of document.querySelectorAll("[data-since]")) {
      const at = Date.parse(el.dataset.since);
      el.textContent = isNaN(at) ? "?" : ageText((now - at) / 1000);
    }
    if (state.live && now - state.lastEventAt > STALE_MS) {
      lost("no word from the backend for " + Math.round((now - state.lastEventAt) / 1000) + " s");
    }
  }

  function setConnection(kind, text) {
    const el = $("connection");
    if (!el) return;
    el.dataset.state = kind;
    el.textContent = text;
    body.classList.toggle("not-live", kind !== "live");
  }

  // ---- the live connection -------------------------------------------------------------------

  function connect() {
    const url = body.dataset.live;
    if (!url || state.sessionEnded) return;
    if (state.source) state.source.close();
    setConnection(state.lostAt ? "down" : "connecting", state.lostAt ? "Reconnecting…" : "Connecting…");
    const source = new EventSource(url);
    state.source = source;
    source.addEventListener("hello", (event) => {
      const wasLost = state.lostAt !== null;
      state.live = true;
      state.attempts = 0;
      state.lostAt = null;
      state.lastEventAt = Date.now();
      hide("disconnected");
      setConnection("live", "Live");
      showIngest(JSON.parse(event.data).ingest);
      // Whatever happened while we were away (or before this page loaded) is on screen now.
      refreshAll(wasLost ? "reconnected" : "connected");
    });
    source.addEventListener("status", (event) => {
      state.lastEventAt = Date.now();
      showIngest(JSON.parse(event.data).ingest);
    });
    source.addEventListener("alarm", (event) => {
      state.lastEventAt = Date.now();
      onAlarmChange(JSON.parse(event.data));
    });
    source.addEventListener("fleet", () => {
      state.lastEventAt = Date.now();
      debounce("fleetTimer", 500, () => body.dispatchEvent(new CustomEvent("fleet-changed")));
    });
    source.addEventListener("session_ended", () => sessionEnded());
    source.onerror = () => {
      if (state.source !== source) return;
      lost(state.live ? "the connection to the backend was lost" : "the backend cannot be reached");
    };
  }

  function lost(reason) {
    if (state.source) { state.source.close(); state.source = null; }
    const first = state.lostAt === null;
    state.live = false;
    if (first) state.lostAt = new Date();
    show("disconnected");
    const text = $("disconnected-text");
    if (text) text.textContent = "Since " + clock(state.lostAt) + ": " + reason + ".";
    setConnection("down", "NOT LIVE");
    scheduleReconnect();
  }

  function scheduleReconnect() {
    if (state.reconnectTimer) return;
    const wait = RECONNECT_MS[Math.min(state.attempts, RECONNECT_MS.length - 1)];
    state.attempts += 1;
    state.reconnectTimer = setTimeout(async () => {
      state.reconnectTimer = null;
      // A session that ended (expired, logged out elsewhere) gets the login page, not endless retries.
      try {
        const answer = await fetch("/console/whoami", { headers: { Accept: "application/json" } });
        if (answer.status === 401) { sessionEnded(); return; }
      } catch (error) {
        scheduleReconnect();
        return;
      }
      connect();
    }, wait);
  }

  function sessionEnded() {
    state.sessionEnded = true;
    if (state.source) { state.source.close(); state.source = null; }
    state.live = false;
    setConnection("down", "Logged out");
    show("session-ended");
    stopAlertSound();
  }

  function showIngest(ingest) {
    if (!ingest) return;
    const el = $("ingest-down");
    let problem = null;
    if (ingest.state === "never") problem = "No backend has ever run on this database: alarms cannot arrive.";
    else if (ingest.state === "stopped") problem = "The backend (ingest) is stopped: alarms are not arriving.";
    else if (ingest.state === "stale") problem = "The backend (ingest) has not reported for " + ageText(ingest.age_s) + ": alarms may not be arriving.";
    else if (!ingest.broker_connected) problem = "The backend is not connected to the broker: alarms are not arriving.";
    if (problem) { el.innerHTML = "<strong>ALARMS NOT ARRIVING.</strong> " + problem + " Police IT must restart it."; el.hidden = false; }
    else el.hidden = true;
    body.classList.toggle("ingest-down", problem !== null);
  }

  // ---- reloading what changed ----------------------------------------------------------------

  function debounce(key, ms, fn) {
    clearTimeout(state[key]);
    state[key] = setTimeout(fn, ms);
  }

  function selectedAlarm() {
    const detail = document.querySelector("#alarm-details .alarm-detail");
    return detail ? Number(detail.dataset.alarm) : null;
  }

  function refreshQueue() {
    // The queue on the dispatch page; elsewhere its hidden copy, which only feeds the alarm alert.
    const target = $("queue") ? "#queue" : $("queue-watch") ? "#queue-watch" : null;
    if (target) htmx.ajax("GET", "/console/queue", { target: target, swap: "innerHTML" });
  }

  // What a dispatcher has chosen and typed in the resolve form survives a refresh of the same alarm
  // (a live update swaps the whole view in while she writes her note).
  function resolveDraft() {
    const form = document.querySelector("#alarm-details form.resolve");
    const detail = form && form.closest(".alarm-detail");
    if (!detail) return null;
    const active = document.activeElement;
    return {
      alarm: detail.dataset.alarm,
      values: Array.from(form.elements).filter((field) => field.name).map((field) => [field.name, field.value]),
      focused: active && form.contains(active) ? active.name : null,
    };
  }

  function restoreDraft(draft) {
    const form = document.querySelector("#alarm-details form.resolve");
    const detail = form && form.closest(".alarm-detail");
    if (!draft || !detail || detail.dataset.alarm !== draft.alarm) return;
    for (const [name, value] of draft.values) {
      const field = form.elements.namedItem(name);
      if (field && value) field.value = value;
    }
    const focused = draft.focused && form.elements.namedItem(draft.focused);
    if (focused) focused.focus();
  }

  function refreshDetails(pk) {
    if (pk) htmx.ajax("GET", "/console/alarms/" + pk + "/details", { target: "#alarm-details", swap: "innerHTML" });
  }

  function refreshAll(why) {
    refreshQueue();
    const pk = selectedAlarm();
    if (pk) {
      refreshDetails(pk);
      if (window.PendantMap) window.PendantMap.show(pk, { reload: true });
    }
    if ($("fleet-table")) body.dispatchEvent(new CustomEvent("fleet-changed"));
    body.dataset.refreshed = why + " " + new Date().toISOString();
  }

  function onAlarmChange(change) {
    debounce("queueTimer", 100, refreshQueue);
    if (!$("queue")) return;  // another page (the fleet): only the alert follows alarms
    const pk = selectedAlarm();
    if (pk === change.alarm) {
      if (change.kind === "alarm_location" && window.PendantMap) window.PendantMap.update(pk);
      debounce("detailTimer", 150, () => refreshDetails(pk));
    }
  }

  // ---- the alert -----------------------------------------------------------------------------

  const sound = { context: null, timer: null, kind: null };

  function audioContext() {
    if (!sound.context) {
      const Context = window.AudioContext || window.webkitAudioContext;
      if (!Context) return null;
      sound.context = new Context();
    }
    return sound.context;
  }

  function beep(kind) {
    const context = audioContext();
    if (!context || context.state !== "running") return false;
    const tones = kind === "escalation" ? [988, 740, 988, 740] : [880, 660];
    let at = context.currentTime;
    for (const frequency of tones) {
      const oscillator = context.createOscillator();
      const gain = context.createGain();
      oscillator.type = "square";
      oscillator.frequency.value = frequency;
      gain.gain.setValueAtTime(0.15, at);
      gain.gain.exponentialRampToValueAtTime(0.001, at + 0.28);
      oscillator.connect(gain).connect(context.destination);
      oscillator.start(at);
      oscillator.stop(at + 0.3);
      at += 0.32;
    }
    return true;
  }

  function startAlertSound(kind) {
    if (sound.timer && sound.kind === kind) return;
    stopAlertSound();
    sound.kind = kind;
    const ring = () => {
      const playing = beep(kind);
      body.dataset.sound = playing ? "playing" : "blocked";
      $("sound-toggle").hidden = playing;
    };
    ring();
    sound.timer = setInterval(ring, kind === "escalation" ? 1500 : 2000);
  }

  function stopAlertSound() {
    clearInterval(sound.timer);
    sound.timer = null;
    sound.kind = null;
    body.dataset.sound = "off";
    const toggle = $("sound-toggle");
    if (toggle) toggle.hidden = true;
  }

  function updateAlert() {
    const inner = document.querySelector("#queue .queue-inner, #queue-watch .queue-inner");
    if (!inner) return;
    const away = !$("queue");  // on the fleet pages the alert says where the alarms are
    const unacked = Number(inner.dataset.unacked || 0);
    const escalated = Number(inner.dataset.escalated || 0);
    const tests = Number(inner.dataset.tests || 0);
    const supervisor = body.dataset.escalations === "yes";
    const alert = $("alarm-alert");
    if (unacked > 0) {
      alert.textContent = (unacked === 1 ? "NEW ALARM: 1 alarm" : "NEW ALARMS: " + unacked + " alarms") +
        " not acknowledged. " + (away ? "" : "Open it, then acknowledge.");
      if (away) alert.append(queueLink());
      alert.hidden = false;
    } else if (tests > 0) {
      alert.textContent = "Test alarm waiting (" + tests + "): not dispatched, acknowledge it when you can. ";
      if (away) alert.append(queueLink());
      alert.hidden = false;
    } else {
      alert.hidden = true;
    }
    alert.classList.toggle("test-only", unacked === 0 && tests > 0);
    const escalation = $("escalation-alert");
    if (supervisor && escalated > 0) {
      escalation.textContent = "ESCALATION: " + escalated + " alarm" + (escalated === 1 ? " has" : "s have") +
        " not been acknowledged in time. Make sure someone takes " + (escalated === 1 ? "it" : "them") + " now.";
      escalation.hidden = false;
    } else {
      escalation.hidden = true;
    }
    body.dataset.alert = unacked > 0 ? "on" : "off";
    if (supervisor && escalated > 0) startAlertSound("escalation");
    else if (unacked > 0) startAlertSound("alarm");
    else stopAlertSound();
    if (away) return;
    // A new alarm opens by itself when the dispatcher has none open.
    if (!selectedAlarm() && inner.dataset.firstAlert && $("alarm-details")) {
      const pk = Number(inner.dataset.firstAlert);
      htmx.ajax("GET", "/console/alarms/" + pk + "/details", { target: "#alarm-details", swap: "innerHTML" });
      history.replaceState(null, "", "/console/alarms/" + pk);
    }
  }

  function queueLink() {
    const link = document.createElement("a");
    link.href = "/console";
    link.textContent = "Open the alarm queue.";
    return link;
  }

  // ---- wiring --------------------------------------------------------------------------------

  function init() {
    document.addEventListener("htmx:beforeSwap", (event) => {
      if (event.detail.target.id === "alarm-details") state.draft = resolveDraft();
    });
    document.addEventListener("htmx:afterSwap", (event) => {
      const target = event.detail.target;
      if (target.id === "queue" || target.id === "queue-watch") updateAlert();
      if (target.id === "alarm-details") {
        restoreDraft(state.draft);
        state.draft = null;
        const pk = selectedAlarm();
        const pane = $("map-pane");
        if (pane) pane.hidden = !pk;
        if (pk && pk !== state.selected && window.PendantMap) window.PendantMap.show(pk, { reload: false });
        state.selected = pk;
        for (const item of document.querySelectorAll("#queue li.alarm")) {
          item.classList.toggle("selected", Number(item.dataset.alarm) === pk);
        }
      }
      tick();
    });
    document.addEventListener("htmx:responseError", (event) => {
      const xhr = event.detail.xhr;
      if (xhr.status === 401) { sessionEnded(); return; }
      let message = xhr.responseText;
      try {
        const answer = JSON.parse(xhr.responseText);
        message = answer.problems ? answer.problems.join("; ") : answer.detail;
      } catch (error) { /* an HTML or plain answer: shown as it is */ }
      show("flash", "Not done (" + xhr.status + "): " + message);
      setTimeout(() => hide("flash"), 10000);
    });
    document.addEventListener("htmx:sendError", () => lost("the backend did not answer"));
    document.addEventListener("click", (event) => {
      const link = event.target.closest("a[data-sort]");
      if (!link) return;
      const form = $("fleet-filters");
      if (!form) return;
      event.preventDefault();
      form.elements.sort.value = link.dataset.sort;
      form.elements.direction.value = link.dataset.direction;
      form.dispatchEvent(new Event("change", { bubbles: true }));
    });
    const toggle = $("sound-toggle");
    if (toggle) {
      toggle.addEventListener("click", async () => {
        const context = audioContext();
        if (context) await context.resume();
        const kind = sound.kind;
        stopAlertSound();
        if (kind) startAlertSound(kind);
      });
    }
    state.selected = selectedAlarm();
    if (state.selected && window.PendantMap) window.PendantMap.show(state.selected, { reload: false });
    updateAlert();
    tick();
    setInterval(tick, 500);
    connect();
  }

  document.addEventListener("DOMContentLoaded", init);
  return { state, refreshAll, ageText };
})();
