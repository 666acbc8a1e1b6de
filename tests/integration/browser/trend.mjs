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
  const shown = await page.evaluate(({ bed, colour, bpColour }) => {
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
    // The cuff reading's bar on the BP plot: where pixels of its colour are, in CSS pixels.
    const bp = el.querySelector(".bp-trend");
    const bpData = bp.getContext("2d").getImageData(x0, 0, x1 - x0, bp.height).data;
    const bpW = x1 - x0;
    let bpPixels = 0, yMin = Infinity, yMax = -Infinity, xMin = Infinity, xMax = -Infinity;
    for (let i = 0; i < bpData.length; i += 4) {
      if (bpData[i] === bpColour[0] && bpData[i + 1] === bpColour[1] && bpData[i + 2] === bpColour[2] && bpData[i + 3] === 255) {
        const px = (i / 4) % bpW, py = Math.floor(i / 4 / bpW);
        bpPixels++; yMin = Math.min(yMin, py); yMax = Math.max(yMax, py); xMin = Math.min(xMin, px); xMax = Math.max(xMax, px);
      }
    }
    const v = (kind) => el.querySelector(`.v[data-kind="${kind}"]`);
    return {
      points: spo2.length, span_s: (spo2[spo2.length - 1][0] - spo2[0][0]) / 1000, blue_pixels: blue,
      spo2: v("spo2").querySelector(".value").textContent, pulse: v("pulse_rate").querySelector(".value").textContent,
      nibp: v("nibp").querySelector(".value").textContent, nibp_age: v("nibp").querySelector(".age").textContent,
      nibp_stale: v("nibp").classList.contains("stale"), nibp_colour: getComputedStyle(v("nibp").querySelector(".value")).color,
      spo2_colour: getComputedStyle(v("spo2").querySelector(".value")).color, state: el.dataset.state,
      bp_readings: Number(bp.dataset.readings), bp_pixels: bpPixels, bp_height: bp.clientHeight,
      bp_top: yMin / ratio, bp_bottom: (yMax + 1) / ratio, bp_x: (x0 + xMin) / ratio, bp_width: (xMax - xMin + 1) / ratio,
      plot_right: canvas.clientWidth - 32,
    };
  }, { bed: opt.bed, colour: [0x42, 0xa5, 0xf5], bpColour: [0xff, 0xb7, 0x4d] });
  say({ event: "opened", after_ms: Date.now() - connected, ...shown });
  await page.locator(tile).scrollIntoViewIfNeeded();
  await shot(page, opt, "station-trend");
});
