// Drives Debian's headless chromium through the nurse station for tests/integration/test_station_browser.py.
//
// Usage: node drive.mjs '<json options>'; prints one JSON object per line on stdout (the test reads
// them as they come) and exits 0 when every step passed, 3 when the acknowledgement never came
// back from the bed (the daemon's cmd handling is missing or broken), 1 on any other failure.
// Steps: open the page, enter the nurse's name, enable sound, wait for the bed's tile with live
// vitals (screenshot "normal"), wait for a HIGH alarm (screenshot "alarm"), click Acknowledge,
// wait until the tile says who acknowledged, reload and check the view is rebuilt from retained state.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const opt = JSON.parse(process.argv[2]);
const say = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const profile = mkdtempSync(join(tmpdir(), "vw-chromium-"));
const tile = `.tile[data-bed="${opt.bed}"]`;

const context = await chromium.launchPersistentContext(profile, {
  executablePath: opt.chromium,
  headless: true,
  viewport: { width: opt.width ?? 1024, height: opt.height ?? 720 },
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
let code = 1;
try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.on("console", (msg) => { if (msg.type() === "error") say({ event: "console-error", text: msg.text() }); });
  page.on("pageerror", (err) => say({ event: "page-error", text: String(err) }));
  await page.goto(opt.url);
  await page.fill("#nurse", opt.nurse);
  await page.press("#nurse", "Tab"); // "change" stores the name
  await page.click("#sound"); // the user gesture browsers require before a page may make sound
  await page.waitForSelector(`#conn[data-state="online"]`, { timeout: 10000 });

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
  normal.hung_state = await page.$eval(`.tile[data-bed="${opt.hungBed}"]`, (el) => el.dataset.state);
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
    code = 3;
    throw new Error("no acknowledgement came back");
  }
  const acked = await page.$eval(mine, (el) => ({ text: el.textContent, button: !!el.querySelector("button") }));
  say({ event: "acked", ...acked, beeps: await page.evaluate(() => window.vwStation.beeps) });

  // The hung gateway's heartbeats stopped when "high" was printed: its tile must say so, on this clock.
  const hung = `.tile[data-bed="${opt.hungBed}"]`;
  await page.waitForSelector(`${hung}[data-state="silent"]`, { timeout: 10000 });
  say({ event: "silent", state: "silent", text: await page.$eval(hung, (el) => el.querySelector(".silent").textContent) });

  // Reload: everything comes back from the retained status and alarms; vitals wait for new values.
  await page.reload();
  await page.waitForSelector(`${tile}`, { timeout: 10000 });
  await page.waitForTimeout(500);
  const rebuilt = await page.$eval(tile, (el) => ({
    state: el.dataset.state, phase: el.querySelector(".phase").textContent,
    alarms: [...el.querySelectorAll(".alarm")].map((a) => ({ id: a.dataset.alertId, acknowledged: a.dataset.acknowledged, text: a.textContent })),
  }));
  say({ event: "reloaded", ...rebuilt });
  code = 0;
} catch (err) {
  say({ event: "failed", error: String(err && err.message || err) });
  if (opt.failureShot) await context.pages()[0]?.screenshot({ path: opt.failureShot }).catch(() => {});
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(code);
