/**
 * The `wiz` command bundled into one ES module file with everything it imports: what
 * `npm run build` ships as `dist/bin/wiz.js`, and what the end-to-end tests start (a bundle
 * starts on ~0.4 s of CPU; `node --import tsx src/cli/main.ts` on ~3 s, most of a test's time).
 */
import * as esbuild from "esbuild"
import { fileURLToPath } from "node:url"

/**
 * Packages the bundle requires from beside it instead of containing them (its `require`
 * resolves from its own directory up: the app's or the global node_modules), each only when
 * used. Native modules cannot go inside a bundle: `better-sqlite3`, for `--store FILE`, and
 * `pg-native`, which `pg` requires only when asked for its native client. `ws`'s optional
 * `bufferutil` and `utf-8-validate` (the cluster's and the HTTP server's sockets) and `debug`'s
 * `supports-color` (through ioredis) are required in a `try` and do without.
 */
export const requiredBeside: ReadonlyArray<string> = ["better-sqlite3", "pg-native", "bufferutil", "utf-8-validate", "supports-color"]

const beside: esbuild.Plugin = {
  name: "required-beside",
  setup(build) {
    const filter = new RegExp(`^(${requiredBeside.join("|")})$`)
    build.onResolve({ filter }, (args) =>
      args.namespace === "required-beside"
        ? { path: args.path, external: true }
        : { path: args.path, namespace: "required-beside" })
    build.onLoad({ filter: /.*/, namespace: "required-beside" }, (args) => ({
      contents: `module.exports = require(${JSON.stringify(args.path)})`,
      loader: "js"
    }))
  }
}

/** Bundles `src/cli/main.ts` into `outfile` (relative to the package's root, or absolute). */
export const bundleCli = (outfile: string) =>
  esbuild.build({
    absWorkingDir: fileURLToPath(new URL("..", import.meta.url)),
    entryPoints: ["src/cli/main.ts"],
    plugins: [beside],
    outfile,
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
