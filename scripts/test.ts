/**
 * `npm test`: the type check and the test suite, side by side. The suite leaves a core idle
 * much of the time (a `TestClock` waits two real timer turns before each sleeper it wakes, and
 * the end-to-end tests wait on child processes), and the type check (~30 s of one core) fills
 * it instead of coming first. The type check is incremental (its state in
 * `node_modules/.cache/wiz-tsc.tsbuildinfo`): a run after a change checks again only what the
 * change reaches, ~7 s instead of ~30 (a fresh clone has no state: the whole check, as CI does).
 * vitest's output streams as it comes; the type checker's is printed when it ends, so the two
 * never interleave. Arguments go to vitest (`npm test -- test/agent`). Fails when either fails.
 */
import { spawn } from "node:child_process"
import { createRequire } from "node:module"

const resolve = createRequire(import.meta.url).resolve

const run = (args: ReadonlyArray<string>, quiet: boolean) =>
  new Promise<{ readonly code: number; readonly output: string }>((done) => {
    const child = spawn(process.execPath, args, { stdio: quiet ? ["ignore", "pipe", "pipe"] : "inherit" })
    let output = ""
    child.stdout?.setEncoding("utf8").on("data", (text: string) => (output += text))
    child.stderr?.setEncoding("utf8").on("data", (text: string) => (output += text))
    child.on("close", (code) => done({ code: code ?? 1, output }))
  })

const [typecheck, suite] = await Promise.all([
  run([
    resolve("typescript/bin/tsc"),
    "-p",
    "tsconfig.json",
    "--noEmit",
    "--incremental",
    "--tsBuildInfoFile",
    "node_modules/.cache/wiz-tsc.tsbuildinfo"
  ], true),
  run([resolve("vitest/vitest.mjs"), "run", ...process.argv.slice(2)], false)
])
process.stdout.write(typecheck.output)
console.log(typecheck.code === 0 ? "typecheck: no errors" : `typecheck: failed (tsc exit ${typecheck.code})`)
process.exit(typecheck.code !== 0 ? typecheck.code : suite.code)
