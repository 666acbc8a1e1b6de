// VitalWatch nurse station: every bed of a site from the MQTT contract in docs/mqtt.md.
//
// All state lives here in the browser and is rebuilt from the broker after a reload: the retained
// status and alarms/{alert_id} topics give the current picture at once; alerts, vitals and
// heartbeats then keep it current. Ages and the "gateway silent" rule use this browser's monotonic
// clock (performance.now()), never a time written in a payload: a gateway with a wrong clock must
// not make a dead bed look alive.
"use strict";
(() => {
  // Priority.rank of vitalwatch/engine/outputs.py (the owner); a test checks this copy against it.
  const RANK = { high: 3, medium: 2, low: 1, info: 0 };
  const TREND_KINDS = { spo2: { lo: 70, hi: 100, colour: "#42a5f5" }, pulse_rate: { lo: 30, hi: 180, colour: "#66bb6a" } };
  const MAX_TREND_POINTS = 2000; // 1 Hz for 10 min is 600; a bound against a chatty gateway
  const MAX_SEEN = 2000; // (alert_id -> last seq) remembered per bed for de-duplication
  const VITAL_STALE_S = 30; // a value older than this is shown struck through
  const ACK_ANSWER_S = 10; // no cmd/result by then: say so next to the alarm
  const HIGH_REPEAT_S = 8; // IEC 60601-1-8 high-priority bursts repeat within 15 s

  const station = {
    cfg: null, client: null, connected: false, subscribedAt: 0,
    beds: new Map(), pending: new Map(), seq: 0,
    id: Array.from(crypto.getRandomValues(new Uint8Array(4)), (b) => b.toString(16).padStart(2, "0")).join(""),
    nurse: "", audio: null, beeps: 0, lastBurst: -Infinity,
  };
  window.vwStation = station; // for the browser test and for a curious engineer's console

  const $ = (sel, root = document) => root.querySelector(sel);
  const now = () => performance.now();

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
    setInterval(() => { for (const bed of station.beds.values()) render(bed); sound(); }, 1000);
  }

  function validName(text) {
    const name = text.trim();
    return name.length >= 1 && name.length <= 64 && !/[\u0000-\u001f]/.test(name) ? name : null;
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
    client.on("connect", () => {
      client.subscribe([`${base}/status`, `${base}/alarms/+`, `${base}/alerts`, `${base}/vitals/+`, `${base}/cmd/result`],
        { qos: 1 }, (err) => {
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
    else if (kind === "vitals" && payload) onVital(bed, payload);
    else if (kind === "cmd" && rest[0] === "result" && payload) onResult(bed, payload);
    render(bed);
  }

  // ---- state per bed ---------------------------------------------------------------------------

  function bedFor(id) {
    let bed = station.beds.get(id);
    if (bed) return bed;
    bed = {
      id, status: null, statusAt: station.connected ? now() : station.subscribedAt, phase: null,
      phaseSince: null, phaseExact: false, vitals: {}, trend: { spo2: [], pulse_rate: [] },
      alarms: new Map(), seen: new Map(), ackState: new Map(), alarmsKey: null, el: makeTile(id),
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
    }
    if (typeof p.phase_minutes === "number") { bed.phaseSince = t - p.phase_minutes * 60000; bed.phaseExact = true; }
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

  function onVital(bed, p) {
    if (typeof p.kind !== "string") return;
    const t = now();
    bed.vitals[p.kind] = { value: typeof p.value === "number" ? p.value : null, quality: p.quality, at: t };
    const series = bed.trend[p.kind];
    if (!series) return;
    if (typeof p.value === "number" && p.quality !== "invalid") series.push([t, p.value]);
    const horizon = t - station.cfg.trend_minutes * 60000;
    while (series.length && (series[0][0] < horizon || series.length > MAX_TREND_POINTS)) series.shift();
  }

  function onResult(bed, p) {
    const sent = station.pending.get(p.request_id);
    if (!sent) return; // another station's command
    station.pending.delete(p.request_id);
    if (p.ok) bed.ackState.set(sent.alertId, { text: "acknowledged: waiting for the bed to confirm", at: now() });
    else {
      const why = typeof p.error === "string" ? p.error : (p.error && p.error.message) || "refused";
      bed.ackState.set(sent.alertId, { text: `not acknowledged: ${why}`, error: true });
    }
  }

  // ---- acknowledge -----------------------------------------------------------------------------

  function onTileClick(ev) {
    const button = ev.target.closest("button[data-action='ack']");
    if (!button) return;
    const bed = station.beds.get(button.closest(".tile").dataset.bed);
    const alertId = button.closest(".alarm").dataset.alertId;
    if (!station.nurse) {
      $("#nurse").focus();
      bed.ackState.set(alertId, { text: "enter your name (top of the screen) first", error: true });
      return render(bed);
    }
    if (!station.connected) return;
    station.seq += 1;
    const requestId = `st-${station.id}-${Date.now().toString(36)}-${station.seq}`;
    const cmd = { request_id: requestId, command: "ack", alert_id: alertId, by: station.nurse };
    const { topic_prefix: prefix, site } = station.cfg;
    station.client.publish(`${prefix}/${site}/${bed.id}/cmd`, JSON.stringify(cmd), { qos: 1, retain: false });
    station.pending.set(requestId, { bed: bed.id, alertId, at: now() });
    bed.ackState.set(alertId, { text: `sending acknowledgement as ${station.nurse}…`, at: now(), requestId });
    render(bed);
  }

  // ---- drawing ---------------------------------------------------------------------------------

  function makeTile(id) {
    const el = $("#tile-template").content.firstElementChild.cloneNode(true);
    el.dataset.bed = id;
    $(".bed", el).textContent = id;
    return el;
  }

  function ageText(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    return s < 60 ? `${s} s ago` : `${Math.floor(s / 60)} min ago`;
  }

  function render(bed) {
    const el = bed.el;
    const t = now();
    const { heartbeat_s: hb, silent_after: k } = station.cfg;
    const quietS = (t - bed.statusAt) / 1000;
    const offline = bed.status && bed.status.state === "offline";
    const silent = station.connected && (offline || quietS > k * hb || bed.status === null);
    const alarms = [...bed.alarms.values()].sort((a, b) => RANK[b.priority] - RANK[a.priority] || a.seq - b.seq);
    const top = alarms.find((a) => a.priority !== "info");
    el.dataset.state = !station.connected ? "unknown" : silent ? "silent" : top ? `alarm-${top.priority}` : "ok";
    el.classList.toggle("unacked", alarms.some((a) => !a.acknowledged_by && a.priority !== "info"));

    const box = $(".silent", el);
    box.hidden = !silent;
    if (silent) {
      $(".silent-why", el).textContent = offline ? `${bed.id} says offline: NOT being monitored by VitalWatch`
        : bed.status === null ? `no status from ${bed.id}: NOT being monitored by VitalWatch`
        : `no heartbeat from ${bed.id} for ${Math.round(quietS)} s: NOT being monitored by VitalWatch`;
    }
    let phase = bed.phase || "no phase";
    if (bed.phase && bed.phaseSince !== null) {
      const mins = Math.floor((t - bed.phaseSince) / 60000);
      phase += bed.phaseExact ? ` · ${mins} min` : ` · ≥ ${mins} min`;
    }
    $(".phase", el).textContent = phase;

    showVital(el, "spo2", [bed.vitals.spo2], t);
    showVital(el, "pulse_rate", [bed.vitals.pulse_rate], t);
    showVital(el, "nibp", [bed.vitals.nibp_systolic, bed.vitals.nibp_diastolic], t);
    drawTrend($(".trend", el), bed, t);
    showAlarms(el, bed, alarms, t);
  }

  function showVital(el, kind, vitals, t) {
    const box = $(`.v[data-kind="${kind}"]`, el);
    const first = vitals[0];
    if (!first) return;
    const fmt = (v) => (v && v.value !== null ? String(Math.round(v.value)) : "–");
    $(".value", box).textContent = vitals.map(fmt).join("/");
    const invalid = vitals.some((v) => !v || v.value === null || v.quality === "invalid");
    const age = t - Math.min(...vitals.filter(Boolean).map((v) => v.at));
    box.classList.toggle("invalid", invalid);
    box.classList.toggle("stale", age > VITAL_STALE_S * 1000);
    $(".age", box).textContent = (invalid ? "invalid · " : "") + ageText(age);
  }

  function drawTrend(canvas, bed, t) {
    const ctx = canvas.getContext("2d");
    const { width: w, height: h } = canvas;
    ctx.clearRect(0, 0, w, h);
    // The window grows with the data (at least 2 min) up to trend_minutes, so a fresh page shows a line.
    const oldest = Math.min(...Object.keys(TREND_KINDS).map((k) => bed.trend[k][0]?.[0] ?? t));
    const span = Math.min(station.cfg.trend_minutes * 60000, Math.max(120000, t - oldest));
    const y90 = h - ((90 - 70) / 30) * (h - 4) - 2; // the usual SpO2 alarm limit, for orientation
    ctx.strokeStyle = "#555";
    ctx.setLineDash([4, 4]);
    ctx.beginPath(); ctx.moveTo(0, y90); ctx.lineTo(w, y90); ctx.stroke();
    ctx.setLineDash([]);
    for (const [kind, style] of Object.entries(TREND_KINDS)) {
      const series = bed.trend[kind];
      if (series.length < 2) continue;
      ctx.strokeStyle = style.colour;
      ctx.lineWidth = 2;
      ctx.beginPath();
      series.forEach(([at, v], i) => {
        const x = w - ((t - at) / span) * w;
        const y = h - ((Math.min(style.hi, Math.max(style.lo, v)) - style.lo) / (style.hi - style.lo)) * (h - 4) - 2;
        if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
      });
      ctx.stroke();
    }
  }

  function showAlarms(el, bed, alarms, t) {
    const list = $(".alarms", el);
    const ack = [...bed.ackState.entries()].map(([id, s]) => `${id}:${s.text}`).join();
    const key = alarms.map((a) => `${a.alert_id}:${a.seq}`).join() + `|${ack}|${station.connected}`;
    for (const [id, s] of bed.ackState) {
      if (s.requestId && !s.error && t - s.at > ACK_ANSWER_S * 1000) {
        bed.ackState.set(id, { text: "no answer from the bed gateway: acknowledge again", error: true });
      }
    }
    if (key === bed.alarmsKey) return; // keep the buttons under a finger stable between updates
    bed.alarmsKey = key;
    list.replaceChildren(...alarms.map((a) => alarmItem(a, bed.ackState.get(a.alert_id))));
  }

  function alarmItem(a, ack) {
    const li = document.createElement("li");
    li.className = "alarm";
    li.dataset.alertId = a.alert_id;
    li.dataset.priority = a.priority;
    li.dataset.category = a.category;
    li.dataset.acknowledged = String(Boolean(a.acknowledged_by));
    const icon = document.createElement("span");
    icon.className = "icon";
    icon.textContent = a.category === "technical" ? "⚙" : a.priority === "high" ? "‼" : "!"; // plain glyphs: no emoji font needed
    icon.title = `${a.category} alarm, ${a.priority} priority`;
    const msg = document.createElement("span");
    msg.className = "msg";
    msg.textContent = a.message || a.condition;
    const meta = document.createElement("span");
    meta.className = "meta";
    const onset = a.onset_utc ? new Date(a.onset_utc).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : "?";
    meta.textContent = `${a.priority.toUpperCase()} · ${a.category} · since ${onset}`;
    const act = document.createElement("span");
    act.className = "act";
    if (a.acknowledged_by) {
      const done = document.createElement("span");
      done.className = "acked";
      done.textContent = `✓ acknowledged by ${a.acknowledged_by}`;
      act.append(done);
    } else if (a.priority !== "info") {
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.action = "ack";
      button.textContent = "Acknowledge";
      button.disabled = !station.connected;
      act.append(button);
    }
    li.append(icon, msg, act, meta);
    if (ack) {
      const note = document.createElement("span");
      note.className = ack.error ? "error" : "meta";
      note.textContent = ack.text;
      li.append(note);
    }
    return li;
  }

  main().catch((err) => setConn("offline", `station failed to start: ${err.message}`));
})();
