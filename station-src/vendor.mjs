// Copies MQTT.js's own prebuilt browser bundle (dist/mqtt.min.js, which defines the global
// `mqtt`) into the station's static files, with its licence and a note of version and sha256,
// so the shipped page needs no npm at run time and a reviewer can check the bytes.
import { createHash } from "node:crypto";
import { copyFileSync, readdirSync, readFileSync, writeFileSync, existsSync } from "node:fs";
import { join } from "node:path";

const here = new URL(".", import.meta.url).pathname;
const src = join(here, "node_modules", "mqtt");
const dest = join(here, "..", "vitalwatch", "station", "static", "vendor");
const pkg = JSON.parse(readFileSync(join(src, "package.json"), "utf8"));

copyFileSync(join(src, "dist", "mqtt.min.js"), join(dest, "mqtt.min.js"));
copyFileSync(join(src, "LICENSE.md"), join(dest, "mqtt.LICENSE.md"));
const sha = createHash("sha256").update(readFileSync(join(dest, "mqtt.min.js"))).digest("hex");

// The bundle inlines mqtt's browser dependencies; list every installed package's licence so the
// notice covers them (all permissive: MIT, ISC, BSD, Apache-2.0).
const licences = [];
const walk = (dir) => {
  for (const name of readdirSync(dir).sort()) {
    if (name.startsWith(".")) continue;
    if (name.startsWith("@")) { walk(join(dir, name)); continue; }
    const file = join(dir, name, "package.json");
    if (!existsSync(file)) continue;
    const p = JSON.parse(readFileSync(file, "utf8"));
    licences.push(`${p.name} ${p.version}: ${typeof p.license === "string" ? p.license : JSON.stringify(p.license)}`);
  }
};
walk(join(here, "node_modules"));

writeFileSync(join(dest, "VENDORED.md"), `# Vendored: MQTT.js ${pkg.version}

\`mqtt.min.js\` is \`dist/mqtt.min.js\` of the npm package \`mqtt\` ${pkg.version} (MQTT.js, MIT licence,
\`mqtt.LICENSE.md\`), copied unchanged by \`station-src/vendor.mjs\` (\`cd station-src && npm ci && npm run vendor\`).

sha256: \`${sha}\`

The bundle includes the browser parts of its dependencies. Licences of the packages in that
install (station-src/package-lock.json pins them):

${licences.map((l) => `- ${l}`).join("\n")}
`);
console.log(`vendored mqtt ${pkg.version} sha256 ${sha}`);
