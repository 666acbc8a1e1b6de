// Drives Debian's headless chromium through the nurse station for tests/integration/test_station_browser.py.
//
// Usage: node drive.mjs '<json options>'; prints one JSON object per line on stdout (the test reads
// them as they come) and exits 0 when every step passed, 3 when the acknowledgement never came
// back from the bed (the daemon's cmd handling is missing or broken), 1 on any other failure.
// Steps: open the page, enter the nurse's name, enable sound, wait for the bed's tile with live
// vitals (screenshot "normal"), wait for a HIGH alarm (screenshot "alarm"), click Acknowledge,
// wait until the tile says who acknowledged, check the alarm text's width at tablet width (768 px),
// reload and check the view is rebuilt from retained state, then fill and send the infusion form
// of the calm chair.
import { join } from "node:path";
import { openStation, run, say } from "./launch.mjs";

const opt = JSON.parse(process.argv[2]);
const tile = `.tile[data-bed="${opt.bed}"]`;

await run(opt, async (page, outcome) => {
  await openStation(page, opt);
  await page.click("#sound"); // the user gesture browsers require before a page may make sound

  // Normal: the bed is online with live SpO2 and a few trend points.
  await page.waitForFunction(({ bed, points }) => {
    const b = window.vwStation.beds.get(bed);
    // "ok" or only a LOW alarm (an infusion started without a baseline raises one at once).
    return b && b.trend.spo2.length >= points && ["ok", "alarm-low"].includes(b.el.dataset.state);
  }, { bed: opt.bed, points: 4 }, { timeout: opt.normalTimeoutMs ?? 15000 });
  await page.waitForFunction((bed) => window.vwStation.beds.get(bed)?.vitals.spo2, opt.calmBed, { timeout: 5000 });
  const normal = await page.$eval(tile, (el) => ({
    state: el.dataset.state, phase: el.querySelector(".phase").textContent,
    spo2: el.querySelector('.v[data-kind="spo2"] .value').textContent,
    pulse: el.querySelector('.v[data-kind="pulse_rate"] .value').textContent,
    nibp_age: el.querySelector('.v[data-kind="nibp"] .age').textContent,
  }));
  normal.calm_state = await page.$eval(`.tile[data-bed="${opt.calmBed}"]`, (el) => el.dataset.state);
  Object.assign(normal, await page.$eval(`.tile[data-bed="${opt.hungBed}"]`, (el) => ({
    hung_state: el.dataset.state,
    hung_bp: el.querySelector('.v[data-kind="nibp"] .value').textContent,
    hung_bp_age: el.querySelector('.v[data-kind="nibp"] .age').textContent,
    hung_buttons: el.querySelectorAll(".alarms button").length,
    hung_gateway: [...el.querySelectorAll(".gateway li")].map((li) => li.dataset.code),
  })));
  say({ event: "normal", ...normal });
  if (opt.screenshots) await page.screenshot({ path: join(opt.screenshots, "station-normal.png") });

  // A HIGH alarm appears with an Acknowledge button.
  const high = `${tile} .alarm[data-priority="high"][data-acknowledged="false"]`;
  await page.waitForSelector(`${high} button[data-action="ack"]`, { timeout: opt.alarmTimeoutMs ?? 40000 });
  const alarm = await page.$eval(high, (el) => ({
    alert_id: el.dataset.alertId, category: el.dataset.category, text: el.textContent,
    tile_state: el.closest(".tile").dataset.state,
    colour: getComputedStyle(el).backgroundColor,
  }));
  await page.waitForTimeout(1200); // let the once-a-second sound check run
  alarm.beeps = await page.evaluate(() => window.vwStation.beeps);
  say({ event: "high", ...alarm });
  if (opt.screenshots) await page.screenshot({ path: join(opt.screenshots, "station-alarm.png") });

  // Acknowledge: the bed's gateway must answer and republish the alarm as acknowledged by the nurse.
  const mine = `${tile} .alarm[data-alert-id="${alarm.alert_id}"]`;
  await page.click(`${mine} button[data-action="ack"]`);
  say({ event: "clicked", alert_id: alarm.alert_id });
  try {
    await page.waitForSelector(`${mine}[data-acknowledged="true"]`, { timeout: opt.ackTimeoutMs ?? 10000 });
  } catch {
    const text = await page.$eval(mine, (el) => el.textContent).catch(() => "(alarm gone)");
    say({ event: "ack-timeout", text });
    outcome.failCode = 3;
    throw new Error("no acknowledgement came back");
  }
  const acked = await page.$eval(mine, (el) => ({ text: el.textContent, button: !!el.querySelector("button") }));
  say({ event: "acked", ...acked, beeps: await page.evaluate(() => window.vwStation.beeps) });

  // Tablet width: the acknowledged alarm's text keeps the width of the alarm, not a narrow column.
  await page.setViewportSize({ width: 768, height: 1024 });
  const tablet = await page.$eval(mine, (el) => ({
    alarm_width: el.getBoundingClientRect().width,
    text_width: el.querySelector(".msg").getBoundingClientRect().width,
    viewport: window.innerWidth,
  }));
  say({ event: "tablet", ...tablet });
  if (opt.screenshots) await page.screenshot({ path: join(opt.screenshots, "station-tablet.png") });

  // The hung gateway's heartbeats stopped when "high" was printed: its tile must say so, on this clock.
  const hung = `.tile[data-bed="${opt.hungBed}"]`;
  await page.waitForSelector(`${hung}[data-state="silent"]`, { timeout: 10000 });
  say({ event: "silent", state: "silent", ...await page.$eval(hung, (el) => ({
    text: el.querySelector(".silent").textContent,
    colour: getComputedStyle(el.querySelector(".silent")).backgroundColor,
    border: getComputedStyle(el).borderTopColor,
    buttons: el.querySelectorAll(".alarms button").length,
  })) });

  // Reload: everything comes back from the retained status and alarms; vitals wait for new values.
  await page.reload();
  await page.waitForSelector(`${tile}`, { timeout: 10000 });
  await page.waitForTimeout(500);
  const rebuilt = await page.$eval(tile, (el) => ({
    state: el.dataset.state, phase: el.querySelector(".phase").textContent,
    alarms: [...el.querySelectorAll(".alarm")].map((a) => ({ id: a.dataset.alertId, acknowledged: a.dataset.acknowledged, text: a.textContent })),
  }));
  say({ event: "reloaded", ...rebuilt });

  // Session controls on the calm chair (in baseline): the infusion form computes the total dose,
  // insists on an override reason while readiness is open or unknown, and then sends the command;
  // the tile shows the bed's answer, whatever it is (the test compares it with cmd/result).
  const calm = `.tile[data-bed="${opt.calmBed}"]`;
  await page.waitForSelector(`${calm}[data-phase="baseline"] button[data-action="start_infusion"]:not([disabled])`, { timeout: 10000 });
  const offered = await page.$$eval(`${calm} .controls button`, (bs) => bs.map((b) => b.dataset.action));
  await page.click(`${calm} button[data-action="start_infusion"]`);
  await page.waitForSelector("#dialog[open]", { timeout: 5000 });
  await page.fill("#f-dose", "0.5");
  await page.fill("#f-weight", "70");
  const total = await page.$eval("#f-total", (n) => n.textContent);
  await page.click("#dialog-ok");
  const missing = await page.$eval("#dialog-error", (n) => n.textContent);
  await page.fill("#f-reason", opt.overrideReason);
  await page.click("#dialog-ok");
  await page.waitForFunction((s) => { const t = document.querySelector(s).textContent; return t && !t.endsWith("…"); },
    `${calm} .cmd-note`, { timeout: 10000 });
  const note = await page.$eval(`${calm} .cmd-note`, (n) => ({ text: n.textContent, error: n.classList.contains("error") }));
  say({ event: "controls", offered, total, missing, note });
});
