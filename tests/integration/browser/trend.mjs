// Opens the nurse station after data has flowed, for tests/integration/test_station_trend_browser.py:
// the tile must show the trend line and the latest values as soon as the page is connected, from the
// gateway's retained trend document (no live vital can fill minutes of line or an NIBP reading).
//
// Usage: node trend.mjs '<json options>'; one JSON object per line on stdout; exit 0 when every step passed.
import { openStation, run, say, shot } from "./launch.mjs";

const opt = JSON.parse(process.argv[2]);
const tile = `.tile[data-bed="${opt.bed}"]`;

await run(opt, async (page) => {
  await openStation(page, opt); // returns once the page is connected and subscribed
  const connected = Date.now();
  try {
    await page.waitForFunction(({ bed, points }) => {
      const b = window.vwStation.beds.get(bed);
      return b && b.trend.spo2.length >= points && b.trend.pulse_rate.length >= points && b.vitals.nibp_systolic;
    }, { bed: opt.bed, points: opt.points }, { timeout: opt.withinMs });
  } catch (err) {
    say({ event: "missing", bed: await page.evaluate((bed) => {
      const b = window.vwStation.beds.get(bed);
      return b ? { trend: b.trend.spo2.length, seed: b.seed.spo2.length, vitals: Object.keys(b.vitals) } : null;
    }, opt.bed) });
    throw err;
  }
  const shown = await page.evaluate(({ bed, colour }) => {
    const b = window.vwStation.beds.get(bed);
    const el = b.el;
    const spo2 = b.trend.spo2;
    // Pixels of the SpO2 colour inside the plot (not its scale's labels): the line is drawn.
    const canvas = el.querySelector(".trend");
    const ctx = canvas.getContext("2d");
    const ratio = window.devicePixelRatio || 1; // the plot is between the scales: x 30 .. width - 32
    const x0 = Math.ceil(31 * ratio), x1 = Math.floor((canvas.clientWidth - 33) * ratio);
    const data = ctx.getImageData(x0, 0, x1 - x0, canvas.height).data;
    let blue = 0;
    for (let i = 0; i < data.length; i += 4) {
      if (data[i] === colour[0] && data[i + 1] === colour[1] && data[i + 2] === colour[2] && data[i + 3] === 255) blue++;
    }
    const v = (kind) => el.querySelector(`.v[data-kind="${kind}"]`);
    return {
      points: spo2.length, span_s: (spo2[spo2.length - 1][0] - spo2[0][0]) / 1000, blue_pixels: blue,
      spo2: v("spo2").querySelector(".value").textContent, pulse: v("pulse_rate").querySelector(".value").textContent,
      nibp: v("nibp").querySelector(".value").textContent, nibp_age: v("nibp").querySelector(".age").textContent,
      nibp_stale: v("nibp").classList.contains("stale"), nibp_colour: getComputedStyle(v("nibp").querySelector(".value")).color,
      spo2_colour: getComputedStyle(v("spo2").querySelector(".value")).color, state: el.dataset.state,
    };
  }, { bed: opt.bed, colour: [0x42, 0xa5, 0xf5] });
  say({ event: "opened", after_ms: Date.now() - connected, ...shown });
  await page.locator(tile).scrollIntoViewIfNeeded();
  await shot(page, opt, "station-trend");
});
