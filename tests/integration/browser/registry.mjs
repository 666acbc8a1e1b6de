// The registry page in headless chromium, for tests/integration/test_registry_browser.py.
//
// Usage: node registry.mjs '<json options>': opens each of opt.pages ({name, url}) and reports, per
// page, one JSON line: the heading, the per-month table and the alarm table as text by column, and
// every plot as drawn (its box on screen and each mark's month, value and box). Exits 0 when every
// page loaded; a screenshot of each page marked "shot" when opt.screenshots is set.
import { run, say, shot } from "./launch.mjs";

const opt = JSON.parse(process.argv[2]);

function table(sel) {
  return [...document.querySelectorAll(`${sel} tbody tr`)].map((tr) => {
    const row = { ...tr.dataset };
    for (const td of tr.querySelectorAll("td")) row[td.dataset.col] = td.textContent;
    return row;
  });
}

function plots() {
  return [...document.querySelectorAll("svg.chart")].map((svg) => {
    const box = svg.getBoundingClientRect();
    const marks = [...svg.querySelectorAll(".bar, .point, .range")].map((m) => {
      const b = m.getBoundingClientRect();
      return { kind: m.getAttribute("class"), series: m.dataset.series ?? null, month: m.dataset.month,
        value: m.dataset.value, width: b.width, height: b.height, visible: b.width > 0 && b.height > 0 };
    });
    return { id: svg.id, width: box.width, height: box.height, lines: svg.querySelectorAll("polyline.line").length, marks };
  });
}

await run(opt, async (page) => {
  for (const { name, url, shot: keep } of opt.pages) {
    const response = await page.goto(url);
    await page.waitForSelector("#scope");
    say({
      event: `page-${name}`,
      status: response.status(),
      csp: response.headers()["content-security-policy"],
      scope: await page.textContent("#scope"),
      months: await page.evaluate(table, "#months"),
      alarms: await page.evaluate(table, "#alarms"),
      plots: await page.evaluate(plots),
    });
    if (keep) await shot(page, opt, `registry-${name}`);
  }
});
