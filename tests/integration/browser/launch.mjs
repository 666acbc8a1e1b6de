// What every station browser test needs: Debian's chromium, headless, with a fresh profile, and a
// line of JSON on stdout per event (the Python test reads them as they come).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

export const say = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

// Runs steps(page, outcome) in a new headless chromium; exits 0 when they pass, else
// outcome.failCode (1 unless the steps set another). Console errors and page errors are reported as events.
export async function run(opt, steps) {
  const profile = mkdtempSync(join(tmpdir(), "vw-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: opt.chromium,
    headless: true,
    viewport: { width: opt.width ?? 1024, height: opt.height ?? 720 },
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
  const outcome = { code: 1 };
  try {
    const page = context.pages()[0] ?? (await context.newPage());
    page.on("console", (msg) => { if (msg.type() === "error") say({ event: "console-error", text: msg.text() }); });
    page.on("pageerror", (err) => say({ event: "page-error", text: String(err) }));
    await steps(page, outcome);
    outcome.code = 0;
  } catch (err) {
    outcome.code = outcome.failCode ?? 1;
    say({ event: "failed", error: String((err && err.message) || err) });
    if (opt.failureShot) await context.pages()[0]?.screenshot({ path: opt.failureShot, fullPage: true }).catch(() => {});
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
  process.exit(outcome.code);
}

// Opens the station, types the nurse's name and waits for the broker connection.
export async function openStation(page, opt) {
  await page.goto(opt.url);
  await page.fill("#nurse", opt.nurse);
  await page.press("#nurse", "Tab"); // "change" stores the name
  await page.waitForSelector(`#conn[data-state="online"]`, { timeout: 10000 });
}

export async function shot(page, opt, name) {
  if (opt.screenshots) await page.screenshot({ path: join(opt.screenshots, `${name}.png`) });
}
