/**
 * The `wiz` command bundled into one ES module file with everything it imports: what
 * `npm run build` ships as `dist/bin/wiz.js`, and what the end-to-end tests start (a bundle
 * starts on ~0.4 s of CPU; `node --import tsx src/cli/main.ts` on ~3 s, most of a test's time).
 */
import * as esbuild from "esbuild"
import { fileURLToPath } from "node:url"

/** Bundles `src/cli/main.ts` into `outfile` (relative to the package's root, or absolute). */
export const bundleCli = (outfile: string) =>
  esbuild.build({
    absWorkingDir: fileURLToPath(new URL("..", import.meta.url)),
    entryPoints: ["src/cli/main.ts"],
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
