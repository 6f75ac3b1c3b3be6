// Builds what Rollcall serves at /graphiql-static/: the GraphiQL bundle (GraphiQL, React and everything they
// import, minified, production mode), its style sheet, and the licences of every package in the bundle.
// Refresh: change the pinned versions in package.json, then `npm install && npm run build` in this folder,
// and commit package-lock.json and web/static/graphiql/.
import { readFileSync, readdirSync, writeFileSync, existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "..", "web", "static", "graphiql");

const js = await esbuild.build({
  entryPoints: [join(here, "entry.js")],
  bundle: true,
  minify: true,
  format: "iife",
  target: "es2020",
  define: { "process.env.NODE_ENV": '"production"' },
  legalComments: "none",
  metafile: true,
  outfile: join(out, "graphiql.bundle.js"),
  logLevel: "warning",
});
await esbuild.build({
  entryPoints: [join(here, "node_modules", "graphiql", "graphiql.css")],
  bundle: true,
  minify: true,
  legalComments: "none",
  outfile: join(out, "graphiql.min.css"),
  logLevel: "warning",
});

const MIT = `Permission is hereby granted, free of charge, to any person obtaining a copy of this software and
associated documentation files (the "Software"), to deal in the Software without restriction, including
without limitation the rights to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is furnished to do so, subject to the
following conditions:

The above copyright notice and this permission notice shall be included in all copies or substantial
portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT NOT
LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO
EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN
AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE
OR OTHER DEALINGS IN THE SOFTWARE.`;

// Every package a bundled file comes from, with its version and licence text.
const packages = new Map();
const inputs = [...Object.keys(js.metafile.inputs), join("node_modules", "graphiql", "graphiql.css")];
for (const input of inputs) {
  const parts = input.split("node_modules/").at(-1).split("/");
  if (!input.includes("node_modules/")) continue;
  const name = parts[0].startsWith("@") ? `${parts[0]}/${parts[1]}` : parts[0];
  const root = input.slice(0, input.lastIndexOf("node_modules/")) + "node_modules/" + name;
  packages.set(name, join(here, root.startsWith("/") ? root.slice(here.length + 1) : root));
}
const sections = [];
for (const name of [...packages.keys()].sort()) {
  const root = packages.get(name);
  const meta = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
  const licenceFile = readdirSync(root).find((file) => /^(licen[cs]e|copying)(\.|$)/i.test(file));
  let text = licenceFile ? readFileSync(join(root, licenceFile), "utf8").trim() : null;
  if (!text && meta.license === "MIT") {
    // A few packages declare MIT in package.json and ship no licence file: the MIT text, with their author.
    const author = typeof meta.author === "string" ? meta.author : meta.author?.name;
    text = `(no licence file in the package; the MIT licence it declares)\n\nCopyright (c) ${author ?? `the ${meta.name} authors`}\n\n${MIT}`;
  }
  if (!text) throw new Error(`${name} ships no licence file; add its licence by hand before vendoring it`);
  sections.push(`${meta.name} ${meta.version} (${meta.license})\n\n${text}\n`);
}
writeFileSync(
  join(out, "LICENSES.txt"),
  "The packages bundled in graphiql.bundle.js and graphiql.min.css, with their licences.\n\n" +
    sections.join("\n" + "-".repeat(78) + "\n\n"),
);
if (!existsSync(join(out, "rollcall-graphiql.js"))) throw new Error("the page's own script is missing");
console.log(`built ${packages.size} packages into ${out}`);
