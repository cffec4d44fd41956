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
import * as esbuild from "esbuild"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import { builtinModules, createRequire } from "node:module"

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

// Native modules cannot go inside the bundle: `better-sqlite3` (for `--store FILE`) is required
// from beside it (the bundle's `require` resolves from dist/bin/ up: the app's or the global
// node_modules), and only when a SQLite store is opened, so `wiz` without one needs nothing.
// `pg-native` (which `pg` requires only when asked for its native client) and `ws`'s optional
// `bufferutil` and `utf-8-validate` (required in a try, for the cluster's sockets) likewise.
const native = ["better-sqlite3", "pg-native", "bufferutil", "utf-8-validate"]
const requiredBeside: esbuild.Plugin = {
  name: "required-beside",
  setup(build) {
    const filter = new RegExp(`^(${native.join("|")})$`)
    build.onResolve({ filter }, (args) =>
      args.namespace === "required-beside" ? { path: args.path, external: true } : { path: args.path, namespace: "required-beside" })
    build.onLoad({ filter: /.*/, namespace: "required-beside" }, (args) => ({
      contents: `module.exports = require(${JSON.stringify(args.path)})`,
      loader: "js"
    }))
  }
}

const bundle = await esbuild.build({
  entryPoints: ["src/cli/main.ts"],
  plugins: [requiredBeside],
  outfile: bin,
  bundle: true,
  platform: "node",
  target: "node20",
  format: "esm",
  // Some bundled dependencies are CommonJS and `require` Node's own modules; an ES module
  // has no `require` of its own.
  banner: {
    js: `import { createRequire as __wizCreateRequire } from "node:module"; const require = __wizCreateRequire(import.meta.url);`
  },
  metafile: true,
  logLevel: "warning"
})
fs.chmodSync(bin, 0o755)

// The bundle must stand alone: it may import nothing but Node's own modules.
const builtins = new Set(builtinModules)
const [output] = Object.values(bundle.metafile.outputs)
const outside = (output?.imports ?? [])
  .map((i) => i.path)
  .filter((path) => !path.startsWith("node:") && !builtins.has(path) && !native.includes(path))
if (outside.length > 0) {
  throw new Error(`${bin} imports packages it does not contain: ${outside.join(", ")}`)
}
// `import { X } from "@effect/platform-node"` (the barrel) drags undici (1 MB) into the bundle
// through its `Undici` namespace, which cannot be tree-shaken: import the module itself
// (`import * as NodeContext from "@effect/platform-node/NodeContext"`).
const undici = Object.keys(bundle.metafile.inputs).filter((path) => path.includes("node_modules/undici/"))
if (undici.length > 0) {
  const importers = Object.entries(bundle.metafile.inputs)
    .filter(([path, input]) => path.startsWith("src/") && input.imports.some((i) => i.original === "@effect/platform-node"))
    .map(([path]) => path)
  throw new Error(
    `${bin} contains undici; import @effect/platform-node's modules by their own paths, not the barrel` +
      (importers.length > 0 ? ` (in ${importers.join(", ")})` : "")
  )
}
console.log(`${bin}: ${(fs.statSync(bin).size / 1e6).toFixed(2)} MB`)
