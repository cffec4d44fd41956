/**
 * `npm run build`: the published package, from an empty `dist/`.
 *
 * - `dist/esm/`: the library as ES modules, with declarations (`tsconfig.build.json`).
 * - `dist/cjs/`: the same modules as CommonJS (`tsconfig.cjs.json`), with a copy of the same
 *   declarations: `dist/cjs/package.json` says `"type": "commonjs"`, so Node and TypeScript
 *   read both the code and its declarations there as CommonJS, which is what
 *   `require("wiz-effect")` needs.
 * - `dist/bin/wiz.js`: the `wiz` command, bundled with everything it imports (effect,
 *   `@effect/cli`, `@effect/platform-node`, ...) into one file, so the CLI's dependencies are
 *   dev dependencies and installing the library never installs them. Native modules are the
 *   exception (`better-sqlite3` for `--store FILE`): required from beside the bundle when used.
 *
 * The CLI's modules (`src/cli/`) are in the bundle only: they are not part of the library.
 */
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import { builtinModules, createRequire } from "node:module"
import { bundleCli, requiredBeside } from "./bundleCli.js"

const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc")
const bin = "dist/bin/wiz.js"

fs.rmSync("dist", { recursive: true, force: true })

// The CommonJS build emits the same sources again without checking them twice (`noCheck`),
// and takes the ES build's declarations, so both read the same types.
for (const project of ["tsconfig.build.json", "tsconfig.cjs.json"]) {
  execFileSync(process.execPath, [tsc, "-p", project], { stdio: "inherit" })
}
for (const file of fs.readdirSync("dist/esm", { recursive: true, encoding: "utf8" })) {
  if (file.endsWith(".d.ts") || file.endsWith(".d.ts.map")) fs.cpSync(`dist/esm/${file}`, `dist/cjs/${file}`)
}
// The nearest package.json decides how Node and TypeScript read a file, and bundlers read
// `sideEffects` from it too.
fs.writeFileSync("dist/cjs/package.json", JSON.stringify({ type: "commonjs", sideEffects: false }, null, 2) + "\n")

const bundle = await bundleCli(bin)
fs.chmodSync(bin, 0o755)

// The bundle must stand alone: it may import nothing but Node's own modules.
const builtins = new Set(builtinModules)
const [output] = Object.values(bundle.metafile.outputs)
const outside = (output?.imports ?? [])
  .map((i) => i.path)
  .filter((path) => !path.startsWith("node:") && !builtins.has(path) && !requiredBeside.includes(path))
if (outside.length > 0) {
  throw new Error(`${bin} imports packages it does not contain: ${outside.join(", ")}`)
}
// `import { X } from "@effect/platform-node"` (the barrel) drags all of it into the bundle,
// undici (1 MB) through its `Undici` namespace, which cannot be tree-shaken: import the module
// itself (`import * as NodeContext from "@effect/platform-node/NodeContext"`). undici is in the
// bundle on purpose since `wiz serve` calls its upstreams through it (`NodeHttpClient`).
const barrel = Object.entries(bundle.metafile.inputs)
  .filter(([path, input]) => path.startsWith("src/") && input.imports.some((i) => i.original === "@effect/platform-node"))
  .map(([path]) => path)
if (barrel.length > 0) {
  throw new Error(`import @effect/platform-node's modules by their own paths, not the barrel (in ${barrel.join(", ")})`)
}
console.log(`${bin}: ${(fs.statSync(bin).size / 1e6).toFixed(2)} MB`)
