/**
 * vitest's global setup: bundles `src/cli/main.ts` once per run, as `npm run build` ships it,
 * into a directory of its own under `node_modules/.cache` (where what the bundle requires from
 * beside it, the native `better-sqlite3`, resolves from the repository's `node_modules`, as it
 * would beside an installed `wiz`), gives its path to the tests (`inject("wizBin")`), and removes
 * it when the run ends. Once per run, not per test file: a test file's worker is ended without
 * its `exit` handlers running, so a bundle per file was left behind every run.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import type { TestProject } from "vitest/node"
import { bundleCli } from "../../scripts/bundleCli.js"

declare module "vitest" {
  export interface ProvidedContext {
    /** The bundled `wiz.js`. */
    readonly wizBin: string
  }
}

export default async function setup(project: TestProject) {
  const cache = fileURLToPath(new URL("../../node_modules/.cache/", import.meta.url))
  fs.mkdirSync(cache, { recursive: true })
  const dir = fs.mkdtempSync(path.join(cache, "wiz-bin-"))
  const file = path.join(dir, "wiz.js")
  await bundleCli(file)
  project.provide("wizBin", file)
  return () => fs.rmSync(dir, { recursive: true, force: true })
}
