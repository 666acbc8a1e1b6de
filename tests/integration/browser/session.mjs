// A whole chairside session run from the nurse station at tablet width, for
// tests/integration/test_station_session_browser.py.
//
// Usage: node session.mjs '<json options>'; prints one JSON object per line and exits 0 when every
// step passed, 1 otherwise. Steps, on opt.bed (a cuff the gateway can start): start the session,
// record an observation, wait for the baseline, open "Start infusion" (the readiness checklist with
// an open item), enter dose and weight with the keyboard (total mg shown), be refused without an
// override reason, start with one; pause and resume; pump stopped (confirmed); take BP twice
// until discharge readiness is met; end the session (confirmed). On opt.promptBed (a cuff the
// gateway cannot start): "Take BP now" opens a prompt, which the nurse marks done.
import { openStation, run, say, shot } from "./launch.mjs";

const opt = JSON.parse(process.argv[2]);
const tileOf = (bed) => `.tile[data-bed="${bed}"]`;
const tile = tileOf(opt.bed);
const SLOW = opt.stepTimeoutMs ?? 20000;

async function actions(page, bed) {
  return page.$$eval(`${tileOf(bed)} .controls button`, (bs) => bs.map((b) => ({ action: b.dataset.action, text: b.textContent, disabled: b.disabled })));
}

// Waits until the tile's command note shows the gateway's answer to the last command; a refusal
// fails the step with the gateway's reason, unless the step expects one.
async function answer(page, bed, { refused = false } = {}) {
  const sel = `${tileOf(bed)} .cmd-note`;
  await page.waitForFunction((s) => {
    const t = document.querySelector(s).textContent;
    return t && !t.endsWith("…");
  }, sel, { timeout: SLOW });
  const note = await page.$eval(sel, (n) => ({ text: n.textContent, error: n.classList.contains("error") }));
  if (note.error !== refused) throw new Error(`${bed}: unexpected answer: ${note.text}`);
  return note.text;
}

async function phaseIs(page, bed, phase) {
  await page.waitForFunction(({ s, phase }) => document.querySelector(s).dataset.phase === phase,
    { s: tileOf(bed), phase }, { timeout: SLOW });
  return page.$eval(`${tileOf(bed)} .phase`, (n) => n.textContent);
}

const dialogOpen = (page) => page.waitForSelector("#dialog[open]", { timeout: 5000 });

await run(opt, async (page) => {
  await openStation(page, opt);
  await page.waitForFunction((bed) => window.vwStation.beds.get(bed)?.phase === "baseline", opt.bed, { timeout: 15000 });
  say({ event: "baseline", actions: await actions(page, opt.bed), phase: await phaseIs(page, opt.bed, "baseline") });

  // Start session with an age band: keyboard only (focus, Enter; arrows choose a radio; Enter submits).
  await page.focus(`${tile} button[data-action="start_session"]`);
  await page.keyboard.press("Enter");
  await dialogOpen(page);
  const focused = await page.evaluate(() => document.activeElement?.value);
  await page.keyboard.press("ArrowRight"); // "not given" -> "adult"
  await page.keyboard.press("Enter");
  say({ event: "session-started", first_focus: focused, text: await answer(page, opt.bed),
    focus_back: await page.evaluate(() => document.activeElement?.dataset.action) });

  // The other chair's cuff cannot be started from here: "Take BP now" opens a prompt; Done closes it.
  const promptTile = tileOf(opt.promptBed);
  await page.click(`${promptTile} button[data-action="nibp"]`);
  const nibpText = await answer(page, opt.promptBed);
  await page.waitForSelector(`${promptTile} .prompt button[data-action="prompt-done"]`, { timeout: SLOW });
  const prompt = await page.$eval(`${promptTile} .prompt`, (p) => ({ id: p.dataset.promptId, kind: p.dataset.kind, text: p.textContent }));
  say({ event: "prompt", nibp: nibpText, ...prompt });
  await page.locator(promptTile).scrollIntoViewIfNeeded();
  await shot(page, opt, "station-prompt");
  await page.click(`${promptTile} .prompt[data-prompt-id="${prompt.id}"] button[data-action="prompt-done"]`);
  await page.waitForSelector(`${promptTile} .prompt[data-prompt-id="${prompt.id}"]`, { state: "detached", timeout: SLOW });
  say({ event: "prompt-done", id: prompt.id });

  // An observation: dissociation, score 1 (mild).
  await page.click(`${tile} button[data-action="event"]`);
  await dialogOpen(page);
  await page.check('#dialog-body input[name="event"][value="dissociation"]');
  await page.check('#dialog-body input[name="score"][value="1"]');
  await page.click("#dialog-ok");
  say({ event: "observation", text: await answer(page, opt.bed) });

  // The readiness check: wait for a complete baseline, with another item still open (the override).
  await page.waitForFunction((bed) => {
    const r = window.vwStation.beds.get(bed)?.readiness;
    return r && r.items.some((i) => i.item === "baseline" && i.ok) && !r.ready;
  }, opt.bed, { timeout: opt.baselineTimeoutMs ?? 45000 });
  await page.locator(tile).scrollIntoViewIfNeeded();
  await page.focus(`${tile} button[data-action="start_infusion"]`);
  await page.keyboard.press("Enter");
  await dialogOpen(page);
  await page.keyboard.type("0.5"); // the dose field has the focus
  await page.keyboard.press("Tab");
  await page.keyboard.type("70");
  const form = await page.evaluate(() => ({
    checklist: [...document.querySelectorAll("#f-readiness li")].map((li) => ({ ok: li.dataset.ok, item: li.dataset.item, text: li.textContent.trim() })),
    total: document.querySelector("#f-total").textContent,
    planned: document.querySelector("#f-planned").value,
    ok: document.querySelector("#dialog-ok").textContent,
    reason_shown: !document.querySelector("#f-override").hidden,
  }));
  await shot(page, opt, "station-readiness");
  await page.keyboard.press("Enter"); // no override reason yet: the form says so, nothing is sent
  const missing = await page.$eval("#dialog-error", (n) => n.textContent);
  await page.fill("#f-reason", opt.overrideReason);
  await page.press("#f-reason", "Enter");
  say({ event: "infusion", ...form, missing_reason: missing, text: await answer(page, opt.bed), phase: await phaseIs(page, opt.bed, "infusion") });
  await shot(page, opt, "station-infusion");

  // Pause and resume: the buttons swap.
  await page.click(`${tile} button[data-action="pause"]`);
  const paused = await answer(page, opt.bed);
  await page.waitForSelector(`${tile} button[data-action="resume"]`, { timeout: 5000 });
  const pausedPhase = await page.$eval(`${tile} .phase`, (n) => n.textContent);
  await shot(page, opt, "station-paused");
  await page.click(`${tile} button[data-action="resume"]`);
  const resumed = await answer(page, opt.bed);
  await page.waitForSelector(`${tile} button[data-action="pause"]`, { timeout: 5000 });
  say({ event: "pause-resume", paused, paused_phase: pausedPhase, resumed });

  // Pump stopped: irreversible, so confirmed first; cancelling changes nothing.
  await page.click(`${tile} button[data-action="pump_stopped"]`);
  await dialogOpen(page);
  const confirmText = await page.$eval("#dialog", (d) => d.textContent.replace(/\s+/g, " ").trim());
  await page.keyboard.press("Escape");
  const stillInfusion = await page.$eval(tile, (t) => t.dataset.phase);
  await page.click(`${tile} button[data-action="pump_stopped"]`);
  await dialogOpen(page);
  await page.click("#dialog-ok");
  const stopped = await answer(page, opt.bed);
  say({ event: "recovery", confirm: confirmText, after_escape: stillInfusion, text: stopped,
    phase: await phaseIs(page, opt.bed, "recovery"), actions: await actions(page, opt.bed) });

  // Discharge readiness: two BP readings in recovery (the cuff is started from here).
  await page.waitForSelector(`${tile} .discharge:not([hidden])`, { timeout: SLOW });
  const notYet = await page.$eval(`${tile} .discharge`, (d) => ({ ready: d.dataset.ready, text: d.textContent }));
  for (let reading = 1; reading <= 2; reading++) {
    const before = await page.evaluate((bed) => window.vwStation.beds.get(bed).vitals.nibp_systolic?.at ?? 0, opt.bed);
    await page.click(`${tile} button[data-action="nibp"]`);
    await answer(page, opt.bed);
    await page.waitForFunction(({ bed, before }) => (window.vwStation.beds.get(bed).vitals.nibp_systolic?.at ?? 0) > before,
      { bed: opt.bed, before }, { timeout: SLOW });
  }
  await page.waitForSelector(`${tile} .discharge[data-ready="true"]`, { timeout: SLOW });
  const ready = await page.$eval(`${tile} .discharge`, (d) => ({
    text: d.textContent,
    met: [...d.querySelectorAll("li")].map((li) => ({ ok: li.dataset.ok, text: li.textContent.trim() })),
  }));
  say({ event: "discharge", not_yet: notYet, ...ready });
  await page.locator(tile).scrollIntoViewIfNeeded();
  await shot(page, opt, "station-discharge");

  // End the session (discharge), confirmed: only "Start session" is left.
  await page.click(`${tile} button[data-action="end_session"]`);
  await dialogOpen(page);
  await page.click("#dialog-ok");
  say({ event: "ended", text: await answer(page, opt.bed), phase: await phaseIs(page, opt.bed, "ended"),
    actions: await actions(page, opt.bed), discharge_hidden: await page.$eval(`${tile} .discharge`, (d) => d.hidden) });
});
