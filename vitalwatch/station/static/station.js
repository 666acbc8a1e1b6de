// VitalWatch nurse station: every bed of a site from the MQTT contract in docs/mqtt.md.
//
// All state lives here in the browser and is rebuilt from the broker after a reload: the retained
// status, alarms/{alert_id}, prompts, readiness and trend topics give the current picture at once
// (the trend document also carries the latest values with their age); alerts, vitals and heartbeats
// then keep it current. Ages and the "gateway silent" rule use this
// browser's monotonic clock (performance.now()), never a time written in a payload: a gateway with
// a wrong clock must not make a dead bed look alive.
//
// The nurse also runs each chair's session from here: every button sends one command on the bed's
// cmd topic with her name, and the gateway's answer on cmd/result is shown on the tile. The
// gateway decides (its state machine, its readiness check); the page only offers what the current
// phase allows, so a nurse is not invited to do what would be refused.
"use strict";
(() => {
  // Priority.rank of vitalwatch/engine/outputs.py (the owner); a test checks this copy against it.
  const RANK = { high: 3, medium: 2, low: 1, info: 0 };
  // Both scales share four grid lines: SpO2 70/80/90/100 % on the left, pulse 30/80/130/180 /min
  // on the right, so each line of the trend has its own labelled axis.
  const TREND_KINDS = {
    spo2: { lo: 70, hi: 100, colour: "#42a5f5", ticks: [70, 80, 90, 100], side: "left" },
    pulse_rate: { lo: 30, hi: 180, colour: "#66bb6a", ticks: [30, 80, 130, 180], side: "right" },
  };
  // Blood pressure is a reading every few minutes, not a line: each one is drawn as a bar from
  // diastolic to systolic on its own mmHg scale under the SpO2/pulse plot, on the same time axis.
  // 180 mmHg (the default table's hypertension limit) is dashed.
  const BP_SCALE = { lo: 40, hi: 220, colour: "#ffb74d", ticks: [60, 100, 140, 180], limit: 180 };
  const BP_KINDS = ["nibp_systolic", "nibp_diastolic"];
  const SERIES_KINDS = [...Object.keys(TREND_KINDS), ...BP_KINDS];
  const BP_PAIR_MS = 15000; // a systolic and a diastolic this close in time are one cuff reading
  const MAX_TREND_POINTS = 2000; // 1 Hz for 10 min is 600; a bound against a chatty gateway
  const MAX_SEEN = 2000; // (alert_id -> last seq) remembered per bed for de-duplication
  const VITAL_STALE_S = 30; // a value older than this is shown struck through
  const ANSWER_S = 10; // no cmd/result by then: say so where the command was given
  const HIGH_REPEAT_S = 8; // IEC 60601-1-8 high-priority bursts repeat within 15 s
  const PLANNED_MINUTES = 40; // the gateway's default planned infusion length
  // The limits of schemas/command.schema.json, so a typo is caught here before the gateway refuses it.
  const LIMITS = { dose_mg_per_kg: [0, 10], weight_kg: [0, 400], planned_minutes: [0, 600], dose: [0, 10000] };
  const FORBIDDEN = /[\u0000-\u001f\u007f-\u009f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]/;
  // The one documented 0-3 scale of the event command (docs/mqtt.md).
  const SCALE = ["0 none", "1 mild", "2 moderate", "3 severe"];
  const EVENTS = {
    dissociation: { label: "Dissociation", score: "required" },
    emergence: { label: "Emergence reaction", score: "required" },
    nausea: { label: "Nausea" },
    vomiting: { label: "Vomiting" },
    agitation: { label: "Agitation", score: "optional" },
    rescue_medication: { label: "Rescue medication", drug: true },
    note: { label: "Free note", note: true },
  };
  // The gateway's local technical alarms (status.technical, docs/mqtt.md), in a nurse's words.
  const GATEWAY_TECHNICAL = {
    broker_unreachable: "the bed gateway cannot deliver alerts to the broker",
    persistence_degraded: "the bed gateway cannot write its outbox: alerts go out from memory only",
    alarm_manager_unreachable: "alerts cannot reach the hospital alarm manager",
    device_silent: "a monitor of this bed has sent nothing for 2 min",
  };
  const LABEL = {
    start_session: "Start session", start_infusion: "Start infusion", pause: "Pause infusion",
    resume: "Resume infusion", pump_stopped: "Pump stopped", nibp: "Take BP now", event: "Observation",
    end_session: "End session",
  };

  const station = {
    cfg: null, client: null, connected: false, subscribedAt: 0,
    beds: new Map(), pending: new Map(), seq: 0, dialog: null,
    id: Array.from(crypto.getRandomValues(new Uint8Array(4)), (b) => b.toString(16).padStart(2, "0")).join(""),
    nurse: "", audio: null, beeps: 0, lastBurst: -Infinity,
  };
  window.vwStation = station; // for the browser test and for a curious engineer's console

  const $ = (sel, root = document) => root.querySelector(sel);
  const now = () => performance.now();

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (key === "data") Object.assign(node.dataset, value);
      else if (key in node) node[key] = value;
      else node.setAttribute(key, value);
    }
    node.append(...children.filter((c) => c !== null && c !== undefined));
    return node;
  }

  // ---- configuration, nurse name, sound ------------------------------------------------------

  async function main() {
    const cfg = await (await fetch("config.json", { cache: "no-store" })).json();
    station.cfg = cfg;
    document.title = `${cfg.title} – ${cfg.site}`;
    $("#site").textContent = cfg.site;
    const nurse = $("#nurse");
    nurse.value = station.nurse = localStorage.getItem("vitalwatch.nurse") || "";
    nurse.addEventListener("change", () => {
      station.nurse = validName(nurse.value) || "";
      nurse.value = station.nurse;
      localStorage.setItem("vitalwatch.nurse", station.nurse);
    });
    $("#sound").addEventListener("click", enableSound);
    $("#beds").addEventListener("click", onTileClick);
    $("#dialog-form").addEventListener("submit", onDialogSubmit);
    $("#dialog-form").addEventListener("input", () => station.dialog?.update?.());
    $("#dialog-cancel").addEventListener("click", () => $("#dialog").close());
    $("#dialog").addEventListener("close", onDialogClose);
    const password = cfg.username ? sessionStorage.getItem("vitalwatch.password") : null;
    if (cfg.username && password === null) {
      $("#login-user").textContent = cfg.username;
      $("#login").hidden = false;
      $("#login").addEventListener("submit", (ev) => {
        ev.preventDefault();
        sessionStorage.setItem("vitalwatch.password", $("#password").value);
        $("#login").hidden = true;
        connect(cfg, $("#password").value);
      });
    } else {
      connect(cfg, password);
    }
    setInterval(() => { expirePending(); for (const bed of station.beds.values()) render(bed); sound(); }, 1000);
  }

  function validName(text) {
    const name = text.trim();
    return name.length >= 1 && name.length <= 64 && !FORBIDDEN.test(name) ? name : null;
  }

  function enableSound() {
    // Browsers only let a page make sound after a user gesture: this click is it.
    if (!station.audio) station.audio = new AudioContext();
    station.audio.resume();
    $("#sound").dataset.state = "on";
    $("#sound").textContent = "Sound on";
    beep(0, 0.08); // a short confirmation that the speaker works
  }

  function beep(at, length) {
    const ctx = station.audio;
    const osc = ctx.createOscillator();
    const gain = ctx.createGain();
    osc.frequency.value = 880;
    osc.type = "square";
    gain.gain.value = 0.15;
    osc.connect(gain).connect(ctx.destination);
    osc.start(ctx.currentTime + at);
    osc.stop(ctx.currentTime + at + length);
  }

  function sound() {
    const high = [...station.beds.values()].some((bed) =>
      [...bed.alarms.values()].some((a) => a.priority === "high" && !a.acknowledged_by));
    $("#sound").classList.toggle("needed", high && !station.audio);
    if (!high || !station.audio || now() - station.lastBurst < HIGH_REPEAT_S * 1000) return;
    station.lastBurst = now();
    station.beeps += 1;
    // The IEC 60601-1-8 high-priority rhythm, shortened: 3 pulses, a pause, 2 pulses.
    for (const at of [0, 0.2, 0.4, 0.9, 1.1]) beep(at, 0.12);
  }

  // ---- MQTT ------------------------------------------------------------------------------------

  function brokerUrl(cfg) {
    return cfg.broker_ws || `wss://${location.hostname}:${cfg.default_ws_port}/`;
  }

  function connect(cfg, password) {
    const client = mqtt.connect(brokerUrl(cfg), {
      clientId: `vw-station-${station.id}`,
      username: cfg.username || undefined,
      password: password || undefined,
      clean: true,
      keepalive: 30,
      reconnectPeriod: 2000,
      connectTimeout: 10000,
      resubscribe: false, // we subscribe ourselves on every connect, and restart the silence timers
    });
    station.client = client;
    const base = `${cfg.topic_prefix}/${cfg.site}/+`;
    const topics = ["status", "alarms/+", "alerts", "vitals/+", "cmd/result", "prompts", "readiness", "trend"];
    client.on("connect", () => {
      client.subscribe(topics.map((t) => `${base}/${t}`), { qos: 1 }, (err) => {
        if (err) return setConn("offline", `subscribe refused: ${err.message}`);
        // A retained "online" proves nothing about now: every bed's timer starts at subscribe.
        station.subscribedAt = now();
        for (const bed of station.beds.values()) bed.statusAt = station.subscribedAt;
        station.connected = true;
        setConn("online", "connected");
      });
    });
    client.on("close", () => { station.connected = false; setConn("offline", "broker connection lost"); });
    client.on("error", (err) => setConn("offline", `broker: ${err.message}`));
    client.on("message", (topic, body, packet) => onMessage(topic, body, packet.retain));
  }

  function setConn(state, text) {
    $("#conn").dataset.state = state;
    $("#conn").textContent = text;
    const banner = $("#banner");
    banner.hidden = state === "online";
    banner.textContent = "This screen is NOT connected to VitalWatch: alarms are not shown here. " +
      "Watch the bedside monitors.";
    for (const bed of station.beds.values()) render(bed);
  }

  function onMessage(topic, body, retained) {
    const { topic_prefix: prefix, site } = station.cfg;
    const head = `${prefix}/${site}/`;
    if (!topic.startsWith(head)) return;
    const [bedId, kind, ...rest] = topic.slice(head.length).split("/");
    let payload = null;
    if (body.length) {
      try { payload = JSON.parse(new TextDecoder().decode(body)); } catch { return; } // not ours to show
      if (typeof payload !== "object" || payload === null) return;
    }
    const bed = bedFor(bedId);
    if (kind === "status" && payload) onStatus(bed, payload, retained);
    else if (kind === "alarms" && rest.length === 1) {
      if (payload) onAlert(bed, payload); else bed.alarms.delete(rest[0]); // empty retained: alarm over
    } else if (kind === "alerts" && payload) onAlert(bed, payload);
    else if (kind === "vitals" && payload) onVital(bed, payload, retained);
    else if (kind === "trend") onTrend(bed, payload, retained);
    else if (kind === "cmd" && rest[0] === "result" && payload) onResult(bed, payload);
    else if (kind === "prompts") bed.prompts = payload && Array.isArray(payload.prompts) ? payload.prompts : [];
    else if (kind === "readiness") {
      bed.readiness = payload && Array.isArray(payload.items) ? payload : null;
      if (station.dialog?.bed === bed) station.dialog.update?.();
    }
    render(bed);
  }

  // ---- state per bed ---------------------------------------------------------------------------

  function seriesOf() {
    return Object.fromEntries(SERIES_KINDS.map((kind) => [kind, []]));
  }

  function bedFor(id) {
    let bed = station.beds.get(id);
    if (bed) return bed;
    bed = {
      id, status: null, statusAt: station.connected ? now() : station.subscribedAt, phase: null,
      phaseSince: null, phaseExact: false, paused: false, vitals: {},
      // trend = the gateway's trend document (seed) before the first live value, then live values
      trend: seriesOf(), live: seriesOf(), seed: seriesOf(),
      alarms: new Map(), seen: new Map(), ackState: new Map(), alarmsKey: null,
      prompts: [], promptState: new Map(), promptsKey: null, readiness: null,
      note: null, controlsKey: null, dischargeKey: null, el: makeTile(id),
    };
    station.beds.set(id, bed);
    const grid = $("#beds");
    $("#empty")?.remove();
    const after = [...grid.children].find((tile) => tile.dataset.bed.localeCompare(id, undefined, { numeric: true }) > 0);
    grid.insertBefore(bed.el, after || null);
    return bed;
  }

  function onStatus(bed, p, retained) {
    const t = now();
    // Only a live message is a heartbeat; a retained one is a picture of the past.
    bed.statusAt = retained ? Math.max(bed.statusAt, station.subscribedAt) : t;
    if (p.phase !== bed.phase) {
      bed.phase = p.phase;
      bed.phaseSince = t;
      bed.phaseExact = !retained && bed.status !== null; // we saw the change happen
      bed.paused = false; // a new phase is never a paused infusion
    }
    if (typeof p.phase_minutes === "number") { bed.phaseSince = t - p.phase_minutes * 60000; bed.phaseExact = true; }
    if (typeof p.paused === "boolean") bed.paused = p.paused;
    bed.status = p;
  }

  function onAlert(bed, p) {
    if (typeof p.alert_id !== "string" || typeof p.seq !== "number") return;
    const last = bed.seen.get(p.alert_id);
    if (last !== undefined && p.seq <= last) return; // a repeat or a stale transition (docs/mqtt.md)
    bed.seen.delete(p.alert_id);
    bed.seen.set(p.alert_id, p.seq);
    if (bed.seen.size > MAX_SEEN) bed.seen.delete(bed.seen.keys().next().value);
    if (p.state === "cleared") { bed.alarms.delete(p.alert_id); bed.ackState.delete(p.alert_id); }
    else bed.alarms.set(p.alert_id, p);
    if (p.acknowledged_by) bed.ackState.delete(p.alert_id);
    if (p.phase === bed.phase && typeof p.phase_minutes === "number" && !bed.phaseExact) {
      bed.phaseSince = now() - p.phase_minutes * 60000; // the gateway's own count, as of this message
      bed.phaseExact = true;
    }
  }

  function onVital(bed, p, retained) {
    if (typeof p.kind !== "string") return;
    const t = now();
    let at = t;
    if (retained) {
      // A stored value from before this page subscribed: its age can only come from the gateway's
      // label, so it is shown with its clock time and struck through once that says it is old.
      const measured = Date.parse(p.measured_utc);
      if (Number.isNaN(measured)) return;
      at = t - Math.max(0, Date.now() - measured);
    }
    const prev = bed.vitals[p.kind];
    if (retained && prev && prev.at >= at) return; // a live value already arrived
    bed.vitals[p.kind] = {
      value: typeof p.value === "number" ? p.value : null, quality: p.quality, at, retained,
      measured: retained ? p.measured_utc : null,
    };
    const series = bed.live[p.kind];
    if (!series) return;
    if (typeof p.value === "number" && p.quality !== "invalid") {
      series.push([at, p.value, p.value, p.value]);
      if (retained) series.sort((a, b) => a[0] - b[0]);
    }
    mergeTrend(bed, t);
  }

  // The retained trend document (docs/mqtt.md, "Trend"): the last minutes as points of 10 s (mean,
  // min, max) and each kind's latest value, every time an age before sent_utc on the gateway's
  // monotonic clock. A live document is as of its arrival; a retained one (stored before this page
  // subscribed) is placed by how old its sent_utc is by this browser's clock, never younger than 0.
  // An empty message: the bed has no session (or nothing is known), so its curve goes.
  function onTrend(bed, p, retained) {
    const t = now();
    if (!p) {
      for (const kind of SERIES_KINDS) { bed.seed[kind] = []; bed.live[kind] = []; }
      for (const [kind, v] of Object.entries(bed.vitals)) if (v.fromTrend) delete bed.vitals[kind];
      mergeTrend(bed, t);
      return;
    }
    let base = t;
    if (retained) {
      const sent = Date.parse(p.sent_utc);
      if (Number.isNaN(sent)) return;
      base = t - Math.max(0, Date.now() - sent);
    }
    const num = (x) => typeof x === "number" && Number.isFinite(x);
    for (const kind of SERIES_KINDS) {
      const points = p.series && Array.isArray(p.series[kind]) ? p.series[kind] : [];
      bed.seed[kind] = points.filter((q) => Array.isArray(q) && q.length >= 4 && q.every(num))
        .map(([age, mean, lo, hi]) => [base - age * 1000, mean, lo, hi]);
    }
    for (const [kind, v] of Object.entries(p.latest && typeof p.latest === "object" ? p.latest : {})) {
      if (!v || !num(v.age_s)) continue;
      const at = base - v.age_s * 1000;
      const prev = bed.vitals[kind];
      if (prev && prev.at >= at) continue; // a live value (or a newer document) already says more
      bed.vitals[kind] = {
        value: num(v.value) ? v.value : null, quality: v.quality, at, retained: false, fromTrend: true,
        measured: v.measured_utc,
      };
    }
    mergeTrend(bed, t);
  }

  // What is drawn: the document's points older than the first live value, then the live values.
  function mergeTrend(bed, t) {
    const horizon = t - station.cfg.trend_minutes * 60000;
    for (const kind of SERIES_KINDS) {
      const live = bed.live[kind];
      while (live.length && (live[0][0] < horizon || live.length > MAX_TREND_POINTS)) live.shift();
      const first = live.length ? live[0][0] : Infinity;
      bed.trend[kind] = bed.seed[kind].filter(([at]) => at >= horizon && at < first).concat(live);
    }
  }

  function errorText(error) {
    return typeof error === "string" ? error : (error && error.message) || "refused";
  }

  function onResult(bed, p) {
    const sent = station.pending.get(p.request_id);
    if (!sent) return; // another station's command
    station.pending.delete(p.request_id);
    const why = errorText(p.error);
    if (sent.command === "ack") {
      bed.ackState.set(sent.alertId, p.ok ? { text: "acknowledged: waiting for the bed to confirm" }
        : { text: `not acknowledged: ${why}`, error: true });
    } else if (sent.command === "prompt_done") {
      bed.promptState.set(sent.promptId, p.ok ? { text: "done: waiting for the bed to close it" }
        : { text: `not marked done: ${why}`, error: true });
    } else if (!p.ok) {
      bed.note = { text: `${hhmm()} ${sent.label} refused: ${why}`, error: true };
    } else {
      if (sent.action === "pause") bed.paused = true;
      if (sent.action === "resume") bed.paused = false;
      bed.note = { text: `${hhmm()} ${doneText(sent, p.detail || {})}` };
    }
    render(bed);
  }

  function doneText(sent, detail) {
    if (sent.command === "start_infusion") {
      const override = detail.override_reason ? ` Override: ${detail.override_reason}.` : "";
      return `✓ Infusion started: ${fmt(detail.total_mg ?? sent.totalMg)} mg total ` +
        `(${fmt(detail.dose_mg_per_kg)} mg/kg × ${fmt(detail.weight_kg)} kg), ` +
        `${fmt(detail.planned_minutes)} min planned.${override}`;
    }
    if (sent.command === "nibp") {
      return detail.nibp === "started" ? "✓ Cuff started." : "✓ The cuff cannot be started from here: take the BP by hand (see the prompt).";
    }
    if (sent.command === "event") return `✓ Recorded: ${EVENTS[detail.event]?.label || sent.label}.`;
    return `✓ ${sent.label}: done.`;
  }

  function fmt(x) {
    return typeof x === "number" ? String(Math.round(x * 10) / 10) : "?";
  }

  function expirePending() {
    const t = now();
    for (const [rid, sent] of station.pending) {
      if (t - sent.at < ANSWER_S * 1000) continue;
      station.pending.delete(rid);
      const bed = station.beds.get(sent.bed);
      if (!bed) continue;
      const text = `no answer from the bed gateway: ${sent.label} may not have been applied`;
      if (sent.command === "ack") bed.ackState.set(sent.alertId, { text: "no answer from the bed gateway: acknowledge again", error: true });
      else if (sent.command === "prompt_done") bed.promptState.set(sent.promptId, { text, error: true });
      else bed.note = { text, error: true };
    }
  }

  // ---- commands --------------------------------------------------------------------------------

  // Publishes one command for the bed (QoS 1, never retained) with the nurse's name; the answer
  // comes back on cmd/result. Returns null (and says why on the tile) when it cannot be sent.
  function send(bed, command, fields, sent) {
    if (!station.nurse) {
      $("#nurse").focus();
      return refuse(bed, sent, "enter your name (top of the screen) first");
    }
    if (!station.connected) return refuse(bed, sent, "this screen is not connected to the broker");
    station.seq += 1;
    const requestId = `st-${station.id}-${Date.now().toString(36)}-${station.seq}`;
    const cmd = { request_id: requestId, command, by: station.nurse, ...fields };
    const { topic_prefix: prefix, site } = station.cfg;
    station.client.publish(`${prefix}/${site}/${bed.id}/cmd`, JSON.stringify(cmd), { qos: 1, retain: false });
    station.pending.set(requestId, { bed: bed.id, command, at: now(), ...sent });
    const sending = { text: `${sent.label}: sending as ${station.nurse}…`, requestId };
    if (command === "ack") bed.ackState.set(sent.alertId, { ...sending, text: `sending acknowledgement as ${station.nurse}…` });
    else if (command === "prompt_done") bed.promptState.set(sent.promptId, sending);
    else bed.note = sending;
    render(bed);
    return requestId;
  }

  function refuse(bed, sent, text) {
    const note = { text, error: true };
    if (sent.alertId) bed.ackState.set(sent.alertId, note);
    else if (sent.promptId) bed.promptState.set(sent.promptId, note);
    else bed.note = note;
    render(bed);
    return null;
  }

  // What the current phase allows: the gateway's state machine (ended -> baseline -> infusion ->
  // recovery -> ended; a session may end before its infusion) decides, this only hides what it
  // would refuse.
  function actionsFor(bed) {
    switch (bed.phase) {
      case "ended": return ["start_session"];
      // In baseline, start_session names the session that is already taking its baseline (age band, record).
      case "baseline": return ["start_session", "start_infusion", "nibp", "event", "end_session"];
      case "infusion": return [bed.paused ? "resume" : "pause", "pump_stopped", "nibp", "event"];
      case "recovery": return ["nibp", "event", "end_session"];
      default: return [];
    }
  }

  function onTileClick(ev) {
    const button = ev.target.closest("button[data-action]");
    if (!button) return;
    const bed = station.beds.get(button.closest(".tile").dataset.bed);
    const { action } = button.dataset;
    if (action === "ack") {
      const alertId = button.closest(".alarm").dataset.alertId;
      send(bed, "ack", { alert_id: alertId }, { label: "acknowledge", alertId });
    } else if (action === "prompt-done") {
      const promptId = button.closest(".prompt").dataset.promptId;
      send(bed, "prompt_done", { prompt_id: promptId }, { label: "prompt done", promptId });
    } else if (action === "pause" || action === "resume") {
      send(bed, "phase", { phase: action }, { label: LABEL[action], action });
    } else if (action === "nibp") {
      send(bed, "nibp", {}, { label: LABEL.nibp });
    } else if (action === "start_session") startSessionDialog(bed);
    else if (action === "start_infusion") infusionDialog(bed);
    else if (action === "pump_stopped") {
      confirmDialog(bed, `Pump stopped on ${bed.id}?`,
        "The infusion ends and recovery starts. This cannot be undone.", "Yes, the pump is stopped",
        () => send(bed, "pump_stopped", {}, { label: LABEL.pump_stopped }));
    } else if (action === "end_session") {
      const text = bed.phase === "baseline"
        ? "The session ends before any infusion; its record is closed. This cannot be undone."
        : "The patient is discharged: monitoring of this session ends and its record is closed. This cannot be undone.";
      confirmDialog(bed, `End the session on ${bed.id}?`, text, "Yes, end the session",
        () => send(bed, "end_session", {}, { label: LABEL.end_session }));
    } else if (action === "event") eventDialog(bed);
  }

  // ---- dialogs (one modal <dialog>: focus stays inside, Escape cancels, focus returns) ---------

  function openDialog(bed, { title, ok, build, submit, update, kind }) {
    const dialog = $("#dialog");
    if (dialog.open) dialog.close();
    $("#dialog-title").textContent = title;
    $("#dialog-ok").textContent = ok;
    $("#dialog-error").textContent = "";
    const body = $("#dialog-body");
    body.replaceChildren();
    build(body);
    dialog.dataset.kind = kind;
    dialog.dataset.bed = bed.id;
    station.dialog = { bed, submit, update, opener: document.activeElement };
    update?.();
    dialog.showModal();
    (body.querySelector("input, select, textarea") || $("#dialog-ok")).focus();
  }

  function onDialogSubmit(ev) {
    ev.preventDefault();
    const problem = station.dialog?.submit();
    if (problem) {
      $("#dialog-error").textContent = problem;
      return;
    }
    $("#dialog").close();
  }

  function onDialogClose() {
    const opener = station.dialog?.opener;
    const bed = station.dialog?.bed;
    station.dialog = null;
    const target = opener && opener.isConnected ? opener : bed && $(".controls button", bed.el);
    target?.focus();
  }

  function confirmDialog(bed, title, text, ok, onOk) {
    openDialog(bed, {
      kind: "confirm", title, ok,
      build: (body) => body.append(el("p", { className: "confirm-text", textContent: text })),
      submit: () => { onOk(); return null; },
    });
  }

  function field(labelText, input, unit) {
    return el("label", { className: "field" }, el("span", { textContent: labelText }), input,
      unit ? el("span", { className: "unit", textContent: unit }) : null);
  }

  function numberInput(id, props) {
    return el("input", { id, type: "number", inputMode: "decimal", autocomplete: "off", ...props });
  }

  function readNumber(id, name, what) {
    const text = $(`#${id}`).value.trim();
    const value = Number(text);
    const [lo, hi] = LIMITS[name];
    if (text === "" || !Number.isFinite(value)) return [null, `${what}: enter a number`];
    if (!(value > lo && value <= hi)) return [null, `${what} must be more than ${lo} and at most ${hi}`];
    return [value, null];
  }

  function readText(id, what, { optional = false } = {}) {
    const text = $(`#${id}`).value.trim();
    if (!text) return optional ? [null, null] : [null, `${what}: required`];
    if (text.length > 200 || FORBIDDEN.test(text)) return [null, `${what}: at most 200 characters, no control characters`];
    return [text, null];
  }

  function startSessionDialog(bed) {
    const band = (value, text, checked = false) => el("label", { className: "choice" },
      el("input", { type: "radio", name: "age_band", value, checked }), text);
    openDialog(bed, {
      kind: "start_session", title: `Start a session on ${bed.id}`, ok: "Start session",
      build: (body) => body.append(
        el("p", { textContent: "The baseline is taken first (blood pressure and oximetry); start the infusion once it is complete." }),
        el("fieldset", {}, el("legend", { textContent: "Age band (optional; never a date of birth)" }),
          band("", "not given", true), band("adult", "adult"), band("older_adult", "older adult"))),
      submit: () => {
        const value = $("#dialog-body input[name='age_band']:checked")?.value;
        send(bed, "start_session", value ? { age_band: value } : {}, { label: LABEL.start_session });
        return null;
      },
    });
  }

  function readinessList(bed) {
    const r = bed.readiness;
    if (!r) {
      return el("p", { className: "readiness-unknown", textContent: `${bed.id} has not published its readiness check: treated as not ready.` });
    }
    return el("ul", { className: "checklist" }, ...r.items.map((item) =>
      el("li", { data: { ok: String(Boolean(item.ok)), item: String(item.item) } },
        el("span", { className: "mark", textContent: item.ok ? "✓" : "✗", "aria-label": item.ok ? "ok" : "open" }),
        ` ${item.text}`)));
  }

  function infusionDialog(bed) {
    const openItems = () => (bed.readiness ? bed.readiness.items.filter((i) => !i.ok).length : null);
    openDialog(bed, {
      kind: "start_infusion", title: `Start the infusion on ${bed.id}`, ok: "Start infusion",
      build: (body) => body.append(
        el("section", { className: "readiness" }, el("h3", { textContent: "Readiness check" }), el("div", { id: "f-readiness" })),
        el("div", { className: "dose-grid" },
          field("Dose", numberInput("f-dose", { step: "0.05", min: "0.05", max: "10", required: true }), "mg/kg"),
          field("Weight", numberInput("f-weight", { step: "0.5", min: "1", max: "400", required: true }), "kg"),
          field("Planned", numberInput("f-planned", { step: "1", min: "1", max: "600", value: String(PLANNED_MINUTES), required: true }), "min")),
        el("output", { id: "f-total", htmlFor: "f-dose f-weight", className: "total" }),
        el("div", { id: "f-override", className: "override" },
          field("Override reason (items are open)", el("input", { id: "f-reason", maxLength: 200, autocomplete: "off" })))),
      update: () => {
        const list = $("#f-readiness");
        if (!list) return;
        list.replaceChildren(readinessList(bed));
        const open = openItems();
        const needReason = open === null || open > 0;
        $("#f-override").hidden = !needReason;
        $("#dialog-ok").textContent = needReason ? "Start infusion with override" : "Start infusion";
        const dose = Number($("#f-dose").value);
        const weight = Number($("#f-weight").value);
        const ok = $("#f-dose").value && $("#f-weight").value && dose > 0 && weight > 0;
        $("#f-total").textContent = ok
          ? `Total ${Math.round(dose * weight * 10) / 10} mg (${dose} mg/kg × ${weight} kg)`
          : "Total: enter dose and weight";
      },
      submit: () => {
        const [dose, e1] = readNumber("f-dose", "dose_mg_per_kg", "Dose");
        const [weight, e2] = readNumber("f-weight", "weight_kg", "Weight");
        const [planned, e3] = readNumber("f-planned", "planned_minutes", "Planned minutes");
        const open = openItems();
        const needReason = open === null || open > 0;
        const [reason, e4] = needReason ? readText("f-reason", "Override reason (readiness items are open)") : [null, null];
        const problem = e1 || e2 || e3 || e4;
        if (problem) return problem;
        const fields = { dose_mg_per_kg: dose, weight_kg: weight, planned_minutes: planned };
        if (reason) fields.override_reason = reason;
        send(bed, "start_infusion", fields, { label: LABEL.start_infusion, totalMg: Math.round(dose * weight * 10) / 10 });
        return null;
      },
    });
  }

  function eventDialog(bed) {
    const kinds = Object.entries(EVENTS).map(([value, e], i) => el("label", { className: "choice" },
      el("input", { type: "radio", name: "event", value, checked: i === 0 }), e.label));
    const scores = SCALE.map((text, i) => el("label", { className: "choice" },
      el("input", { type: "radio", name: "score", value: String(i) }), text));
    openDialog(bed, {
      kind: "event", title: `Observation on ${bed.id}`, ok: "Record",
      build: (body) => body.append(
        el("fieldset", { className: "kinds" }, el("legend", { textContent: "What" }), ...kinds),
        el("fieldset", { id: "f-score", className: "scale" }, el("legend", { textContent: "Severity" }), ...scores),
        el("div", { id: "f-drug", className: "dose-grid" },
          field("Drug", el("input", { id: "f-drug-name", maxLength: 200, autocomplete: "off" })),
          field("Dose", numberInput("f-drug-dose", { step: "any", min: "0" })),
          field("Unit", el("select", { id: "f-drug-unit" }, ...["mg", "mcg", "ml"].map((u) => el("option", { value: u, textContent: u }))))),
        el("div", { id: "f-note" },
          field("Note (no names, dates or numbers that identify anyone; never exported)",
            el("textarea", { id: "f-note-text", maxLength: 200, rows: 2 })))),
      update: () => {
        const kind = EVENTS[$("#dialog-body input[name='event']:checked")?.value] || {};
        $("#f-score").hidden = !kind.score;
        $("#f-score legend").textContent = kind.score === "optional" ? "Severity (optional)" : "Severity";
        $("#f-drug").hidden = !kind.drug;
        $("#f-note").hidden = !kind.note;
      },
      submit: () => {
        const event = $("#dialog-body input[name='event']:checked")?.value;
        const kind = EVENTS[event];
        if (!kind) return "choose what to record";
        const fields = { event };
        const score = $("#dialog-body input[name='score']:checked")?.value;
        if (kind.score === "required" && score === undefined) return "Severity: choose 0-3";
        if (kind.score && score !== undefined) fields.score = Number(score);
        if (kind.drug) {
          const [drug, e1] = readText("f-drug-name", "Drug");
          const [dose, e2] = readNumber("f-drug-dose", "dose", "Dose");
          if (e1 || e2) return e1 || e2;
          Object.assign(fields, { drug, dose, dose_unit: $("#f-drug-unit").value });
        }
        if (kind.note) {
          const [note, e3] = readText("f-note-text", "Note");
          if (e3) return e3;
          if (/[0-9]{4}/.test(note)) return "Note: no four digits in a row (no dates or record numbers)";
          fields.note = note;
        }
        send(bed, "event", fields, { label: `${LABEL.event}: ${kind.label}` });
        return null;
      },
    });
  }

  // ---- drawing ---------------------------------------------------------------------------------

  function makeTile(id) {
    const tile = $("#tile-template").content.firstElementChild.cloneNode(true);
    tile.dataset.bed = id;
    $(".bed", tile).textContent = id;
    return tile;
  }

  function ageText(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    return s < 60 ? `${s} s ago` : `${Math.floor(s / 60)} min ago`;
  }

  function hhmm() {
    return new Date().toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function clockTime(utc) {
    const d = new Date(utc);
    return Number.isNaN(d.getTime()) ? "?" : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function render(bed) {
    const tile = bed.el;
    const t = now();
    const { heartbeat_s: hb, silent_after: k } = station.cfg;
    const quietS = (t - bed.statusAt) / 1000;
    const offline = bed.status && bed.status.state === "offline";
    const silent = station.connected && (offline || quietS > k * hb || bed.status === null);
    const alarms = [...bed.alarms.values()].sort((a, b) => RANK[b.priority] - RANK[a.priority] || a.seq - b.seq);
    const top = alarms.find((a) => a.priority !== "info");
    tile.dataset.state = !station.connected ? "unknown" : silent ? "silent" : top ? `alarm-${top.priority}` : "ok";
    tile.dataset.phase = bed.phase || "";
    tile.classList.toggle("unacked", alarms.some((a) => !a.acknowledged_by && a.priority !== "info"));
    const live = station.connected && !silent; // commands can reach the bed's gateway

    const box = $(".silent", tile);
    box.hidden = !silent;
    if (silent) {
      $(".silent-why", tile).textContent = offline ? `${bed.id} says offline: NOT being monitored by VitalWatch`
        : bed.status === null ? `no status from ${bed.id}: NOT being monitored by VitalWatch`
        : `no heartbeat from ${bed.id} for ${Math.round(quietS)} s: NOT being monitored by VitalWatch`;
    }
    let phase = bed.phase || "no phase";
    if (bed.phase === "infusion" && bed.paused) phase += " (paused)";
    if (bed.phase && bed.phaseSince !== null) {
      const mins = Math.floor((t - bed.phaseSince) / 60000);
      phase += bed.phaseExact ? ` · ${mins} min` : ` · ≥ ${mins} min`;
    }
    $(".phase", tile).textContent = phase;

    showVital(tile, "spo2", [bed.vitals.spo2], t);
    showVital(tile, "pulse_rate", [bed.vitals.pulse_rate], t);
    showVital(tile, "nibp", [bed.vitals.nibp_systolic, bed.vitals.nibp_diastolic], t);
    const span = trendSpan(bed, t);
    drawTrend($(".trend", tile), bed, t, span);
    drawBloodPressure($(".bp-trend", tile), bed, t, span);
    showGateway(tile, bed, silent);
    showAlarms(tile, bed, alarms, live);
    showPrompts(tile, bed, live);
    showDischarge(tile, bed);
    showControls(tile, bed, live);
  }

  function showVital(tile, kind, vitals, t) {
    const box = $(`.v[data-kind="${kind}"]`, tile);
    const first = vitals[0];
    if (!first) return;
    const show = (v) => (v && v.value !== null ? String(Math.round(v.value)) : "–");
    $(".value", box).textContent = vitals.map(show).join("/");
    const invalid = vitals.some((v) => !v || v.value === null || v.quality === "invalid");
    const age = t - Math.min(...vitals.filter(Boolean).map((v) => v.at));
    const stored = vitals.some((v) => v && v.retained);
    box.classList.toggle("invalid", invalid);
    box.classList.toggle("stale", age > VITAL_STALE_S * 1000);
    box.dataset.stored = String(stored);
    const when = stored ? `at ${clockTime(first.measured)}, before this screen opened` : ageText(age);
    $(".age", box).textContent = (invalid ? "invalid · " : "") + when;
  }

  // The window grows with the data (at least 2 min) up to trend_minutes, so a fresh page shows a
  // line; both plots of a tile share it, so a BP bar sits under the SpO2 and pulse of its time.
  function trendSpan(bed, t) {
    const oldest = Math.min(...SERIES_KINDS.map((k) => bed.trend[k][0]?.[0] ?? t));
    return Math.min(station.cfg.trend_minutes * 60000, Math.max(120000, t - oldest));
  }

  // A canvas sized to its CSS box at this screen's pixel ratio, cleared; returns its 2D context.
  function clearCanvas(canvas, fallbackH) {
    const ratio = window.devicePixelRatio || 1;
    const cssW = canvas.clientWidth || 320;
    const cssH = canvas.clientHeight || fallbackH;
    if (canvas.width !== Math.round(cssW * ratio) || canvas.height !== Math.round(cssH * ratio)) {
      canvas.width = Math.round(cssW * ratio);
      canvas.height = Math.round(cssH * ratio);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, cssW, cssH);
    ctx.font = "11px system-ui, sans-serif";
    return { ctx, cssW, cssH };
  }

  function scaleY(style, topY, bottom) {
    return (v) => bottom - ((Math.min(style.hi, Math.max(style.lo, v)) - style.lo) / (style.hi - style.lo)) * (bottom - topY);
  }

  // The cuff readings in the window as [at, systolic, diastolic]: each systolic with the diastolic
  // nearest in time (within BP_PAIR_MS); a systolic without one is drawn as its tick alone.
  function bloodPressureReadings(bed) {
    const dia = bed.trend.nibp_diastolic;
    return bed.trend.nibp_systolic.map(([at, sys]) => {
      let best = null;
      for (const [dAt, d] of dia) if (Math.abs(dAt - at) <= BP_PAIR_MS && (!best || Math.abs(dAt - at) < Math.abs(best[0] - at))) best = [dAt, d];
      return [at, sys, best ? best[1] : null];
    });
  }

  function drawBloodPressure(canvas, bed, t, span) {
    const { ctx, cssW, cssH } = clearCanvas(canvas, 64);
    const left = 30, right = cssW - 32, topY = 6, bottom = cssH - 6;
    const yOf = scaleY(BP_SCALE, topY, bottom);
    ctx.textBaseline = "middle";
    for (const v of BP_SCALE.ticks) {
      const y = yOf(v);
      ctx.strokeStyle = v === BP_SCALE.limit ? "#888" : "#333";
      ctx.setLineDash(v === BP_SCALE.limit ? [4, 4] : []);
      ctx.lineWidth = 1;
      ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(right, y); ctx.stroke();
      ctx.setLineDash([]);
      ctx.fillStyle = BP_SCALE.colour;
      ctx.textAlign = "right";
      ctx.fillText(String(v), left - 4, y);
    }
    ctx.fillStyle = "#9e9e9e";
    ctx.textAlign = "left";
    ctx.fillText("BP mmHg", left + 4, topY + 4);
    const readings = bloodPressureReadings(bed);
    canvas.dataset.readings = String(readings.length);
    if (!readings.length) {
      ctx.fillStyle = "#9e9e9e";
      ctx.textAlign = "center";
      ctx.fillText("no blood pressure in this window", (left + right) / 2, (topY + bottom) / 2);
      return;
    }
    ctx.save();
    ctx.beginPath(); ctx.rect(left, 0, right - left, cssH); ctx.clip();
    ctx.strokeStyle = BP_SCALE.colour;
    ctx.lineWidth = 3;
    for (const [at, sys, dia] of readings) {
      const x = right - ((t - at) / span) * (right - left);
      const ySys = yOf(sys);
      ctx.beginPath();
      ctx.moveTo(x - 4, ySys); ctx.lineTo(x + 4, ySys); // systolic tick
      if (dia !== null) {
        const yDia = yOf(dia);
        ctx.moveTo(x, ySys); ctx.lineTo(x, yDia); // the bar
        ctx.moveTo(x - 4, yDia); ctx.lineTo(x + 4, yDia); // diastolic tick
      }
      ctx.stroke();
    }
    ctx.restore();
  }

  function drawTrend(canvas, bed, t, span) {
    const { ctx, cssW, cssH } = clearCanvas(canvas, 112);
    // Plot area between the two scales, above the time axis.
    const left = 30, right = cssW - 32, topY = 8, bottom = cssH - 16;
    const yOf = (style, v) => scaleY(style, topY, bottom)(v);
    ctx.textBaseline = "middle";
    const spo2 = TREND_KINDS.spo2;
    spo2.ticks.forEach((v, i) => {
      const y = yOf(spo2, v);
      ctx.strokeStyle = v === 90 ? "#888" : "#333"; // 90 %: the usual SpO2 alarm limit, dashed
      ctx.setLineDash(v === 90 ? [4, 4] : []);
      ctx.lineWidth = 1;
      ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(right, y); ctx.stroke();
      ctx.setLineDash([]);
      for (const style of Object.values(TREND_KINDS)) {
        ctx.fillStyle = style.colour;
        ctx.textAlign = style.side === "left" ? "right" : "left";
        ctx.fillText(String(style.ticks[i]), style.side === "left" ? left - 4 : right + 4, y);
      }
    });
    ctx.fillStyle = "#9e9e9e";
    ctx.textBaseline = "alphabetic";
    ctx.textAlign = "left";
    ctx.fillText(`−${Math.round(span / 60000)} min`, left, cssH - 3);
    ctx.textAlign = "right";
    ctx.fillText("now", right, cssH - 3);
    ctx.textAlign = "center";
    ctx.fillText("SpO₂ %  ·  pulse /min", (left + right) / 2, cssH - 3);
    ctx.save();
    ctx.beginPath(); ctx.rect(left, 0, right - left, cssH); ctx.clip();
    const xOf = (at) => right - ((t - at) / span) * (right - left);
    for (const [kind, style] of Object.entries(TREND_KINDS)) {
      const series = bed.trend[kind];
      if (series.length < 2) continue;
      // The spread (min to max) of each 10 s point of the gateway's document, faint under the line:
      // a dip shorter than 10 s is not averaged away.
      ctx.fillStyle = style.colour + "40";
      ctx.beginPath();
      series.forEach(([at, , lo], i) => { if (i === 0) ctx.moveTo(xOf(at), yOf(style, lo)); else ctx.lineTo(xOf(at), yOf(style, lo)); });
      for (let i = series.length - 1; i >= 0; i--) ctx.lineTo(xOf(series[i][0]), yOf(style, series[i][3]));
      ctx.closePath();
      ctx.fill();
      ctx.strokeStyle = style.colour;
      ctx.lineWidth = 2;
      ctx.beginPath();
      series.forEach(([at, v], i) => {
        const x = xOf(at);
        const y = yOf(style, v);
        if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
      });
      ctx.stroke();
    }
    ctx.restore();
  }

  function showGateway(tile, bed, silent) {
    const codes = !silent && bed.status && Array.isArray(bed.status.technical) ? bed.status.technical : [];
    const list = $(".gateway", tile);
    if (list.dataset.key === codes.join()) return;
    list.dataset.key = codes.join();
    list.replaceChildren(...codes.map((code) => el("li", { className: "alarm", data: { category: "technical", priority: "info", code: String(code) } },
      el("span", { className: "icon", "aria-hidden": "true", textContent: "⚙" }),
      el("div", { className: "text" },
        el("span", { className: "msg", textContent: GATEWAY_TECHNICAL[code] || String(code) }),
        el("span", { className: "meta", textContent: `gateway · technical · ${code}` })))));
  }

  function showAlarms(tile, bed, alarms, live) {
    const list = $(".alarms", tile);
    const ack = [...bed.ackState.entries()].map(([id, s]) => `${id}:${s.text}`).join();
    const key = alarms.map((a) => `${a.alert_id}:${a.seq}`).join() + `|${ack}|${live}`;
    if (key === bed.alarmsKey) return; // keep the buttons under a finger stable between updates
    bed.alarmsKey = key;
    list.replaceChildren(...alarms.map((a) => alarmItem(a, bed.ackState.get(a.alert_id), live)));
  }

  function alarmItem(a, ack, live) {
    const li = el("li", { className: "alarm", data: {
      alertId: a.alert_id, priority: a.priority, category: a.category, acknowledged: String(Boolean(a.acknowledged_by)),
    } });
    const icon = el("span", {
      className: "icon", "aria-hidden": "true", title: `${a.category} alarm, ${a.priority} priority`,
      // plain glyphs: no emoji font needed
      textContent: a.category === "technical" ? "⚙" : a.priority === "high" ? "‼" : "!",
    });
    const onset = a.onset_utc ? clockTime(a.onset_utc) : "?";
    // The text takes the whole width; what the nurse did (or can do) goes below or to the side,
    // never into a column that squeezes the message at tablet width.
    const text = el("div", { className: "text" },
      el("span", { className: "msg", textContent: a.message || a.condition }),
      el("span", { className: "meta", textContent: `${a.priority.toUpperCase()} · ${a.category} · since ${onset}` }),
      a.acknowledged_by ? el("span", { className: "acked", textContent: `✓ acknowledged by ${a.acknowledged_by}` }) : null,
      ack ? el("span", { className: ack.error ? "error" : "meta", textContent: ack.text }) : null);
    li.append(icon, text);
    // A silent gateway cannot take an acknowledgement: no button that would promise one.
    if (!a.acknowledged_by && a.priority !== "info" && live) {
      li.append(el("button", { type: "button", className: "act", data: { action: "ack" }, textContent: "Acknowledge" }));
    }
    return li;
  }

  function showPrompts(tile, bed, live) {
    const list = $(".prompts", tile);
    const state = [...bed.promptState.entries()].map(([id, s]) => `${id}:${s.text}`).join();
    const key = bed.prompts.map((p) => p.prompt_id).join() + `|${state}|${live}`;
    if (key === bed.promptsKey) return;
    bed.promptsKey = key;
    const open = new Set(bed.prompts.map((p) => p.prompt_id));
    for (const id of bed.promptState.keys()) if (!open.has(id)) bed.promptState.delete(id);
    list.replaceChildren(...bed.prompts.filter((p) => typeof p.prompt_id === "string").map((p) => {
      const note = bed.promptState.get(p.prompt_id);
      const li = el("li", { className: "prompt", data: { promptId: p.prompt_id, kind: String(p.kind) } },
        el("span", { className: "icon", "aria-hidden": "true", textContent: "☞" }),
        el("div", { className: "text" },
          el("span", { className: "msg", textContent: p.text }),
          el("span", { className: "meta", textContent: `asked ${clockTime(p.opened_utc)}${p.reason ? ` · ${p.reason}` : ""}` }),
          p.then ? el("span", { className: "meta", textContent: `if not done: ${p.then}` }) : null,
          note ? el("span", { className: note.error ? "error" : "meta", textContent: note.text }) : null));
      if (live) li.append(el("button", { type: "button", className: "act", data: { action: "prompt-done" }, textContent: "Done" }));
      return li;
    }));
  }

  function showDischarge(tile, bed) {
    const d = bed.status && bed.status.discharge;
    const box = $(".discharge", tile);
    const key = JSON.stringify(d ?? null);
    if (key === bed.dischargeKey) return;
    bed.dischargeKey = key;
    box.hidden = !d;
    if (!d) return;
    box.dataset.ready = String(Boolean(d.ready));
    $(".discharge-head", tile).textContent = d.ready
      ? "Discharge: the monitored criteria are met"
      : "Discharge: not yet";
    const line = (ok, text) => el("li", { data: { ok: String(ok) } },
      el("span", { className: "mark", textContent: ok ? "✓" : "✗", "aria-label": ok ? "met" : "missing" }), ` ${text}`);
    $(".discharge-met", tile).replaceChildren(
      ...(d.met || []).map((text) => line(true, text)), ...(d.missing || []).map((text) => line(false, text)));
    $(".discharge-confirms", tile).textContent =
      `The nurse confirms (no monitor measures it): ${(d.nurse_confirms || []).join("; ")}.`;
  }

  function showControls(tile, bed, live) {
    const actions = actionsFor(bed);
    const r = bed.readiness;
    const readiness = bed.phase === "baseline" && r ? (r.ready ? "ready" : `${r.open.length} open`) : "";
    const key = `${actions}|${live}|${readiness}|${bed.phase}`;
    if (key !== bed.controlsKey) { // rebuilt only on a change: a focused button stays focused
      bed.controlsKey = key;
      const buttons = actions.map((action) => {
        let text = LABEL[action];
        if (action === "end_session") text = bed.phase === "baseline" ? "End session (no infusion)…" : "End session (discharge)…";
        else if (["start_session", "start_infusion", "pump_stopped", "event"].includes(action)) text += "…";
        return el("button", {
          type: "button", textContent: text, disabled: !live, className: `ctl ctl-${action}`, data: { action },
        });
      });
      const extra = readiness ? el("span", { className: "readiness-hint", data: { ready: String(r.ready) },
        textContent: r.ready ? "readiness: all items ok" : `readiness: ${r.open.length} item(s) open` }) : null;
      $(".controls", tile).replaceChildren(...buttons, ...(extra ? [extra] : []));
    }
    const note = $(".cmd-note", tile);
    note.textContent = bed.note ? bed.note.text : "";
    note.classList.toggle("error", Boolean(bed.note && bed.note.error));
  }

  main().catch((err) => setConn("offline", `station failed to start: ${err.message}`));
})();
