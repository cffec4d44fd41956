/**
 * The `wiz` executable as a child process, for end-to-end tests on real files, pipes and
 * signals: `node wiz.js ...`, or a bash script in which `wiz` runs it (for `>&-`, `<(...)`,
 * `| head`). `wiz.js` is `src/cli/main.ts` bundled once per run, as `npm run build` ships it
 * (a bundle starts on ~0.4 s of CPU, `node --import tsx` on ~3 s). Every wait is bounded;
 * the child is killed when the test's scope closes.
 */
import { Effect, Schedule } from "effect"
import type { Scope } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import { inject } from "vitest"

/** `src/cli/main.ts` bundled once for the whole run (`test/support/wizBin.ts`). */
const main = Effect.sync(() => inject("wizBin"))

export interface Exited {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly stdout: string
  readonly stderr: string
}

export interface Running {
  readonly child: ChildProcess
  readonly stdout: () => string
  readonly stderr: () => string
  /** Wait (at most `seconds`) until `ready` holds of the output so far. */
  readonly until: (ready: (stdout: string, stderr: string) => boolean, seconds?: number) => Effect.Effect<void, Error>
  /** Wait (at most `seconds`) for the process to exit. */
  readonly exited: (seconds?: number) => Effect.Effect<Exited, Error>
}

export interface Options {
  readonly cwd: string
  readonly stdin?: string
  readonly env?: Record<string, string>
}

const start = (
  command: string,
  args: (main: string) => ReadonlyArray<string>,
  options: Options
): Effect.Effect<Running, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.map(main, (main) => {
      const child = spawn(command, args(main), {
        cwd: options.cwd,
        env: { ...process.env, NO_COLOR: "", ...options.env, WIZ_NODE: process.execPath, WIZ_MAIN: main },
        stdio: ["pipe", "pipe", "pipe"]
      })
      let out = ""
      let err = ""
      child.stdout!.setEncoding("utf8").on("data", (text: string) => (out += text))
      child.stderr!.setEncoding("utf8").on("data", (text: string) => (err += text))
      child.stdin!.on("error", () => {}) // a child that exits before reading its stdin
      if (options.stdin !== undefined) child.stdin!.end(options.stdin)
      const exit = new Promise<Exited>((resolve) =>
        child.on("close", (code, signal) => resolve({ code, signal, stdout: out, stderr: err }))
      )
      const running: Running = {
        child,
        stdout: () => out,
        stderr: () => err,
        until: (ready, seconds = 60) =>
          Effect.suspend(() => (ready(out, err) ? Effect.void : Effect.fail(new Error("not yet")))).pipe(
            Effect.retry(Schedule.spaced("20 millis").pipe(Schedule.upTo(`${seconds} seconds`))),
            Effect.mapError(() => new Error(`timed out after ${seconds}s waiting; stdout:\n${out}\nstderr:\n${err}`))
          ),
        exited: (seconds = 120) =>
          Effect.promise(() => exit).pipe(
            Effect.timeoutFail({
              duration: `${seconds} seconds`,
              onTimeout: () => new Error(`wiz did not exit within ${seconds}s; stdout:\n${out}\nstderr:\n${err}`)
            })
          )
      }
      return running
    }),
    ({ child }) => Effect.sync(() => child.exitCode === null && child.signalCode === null && child.kill("SIGKILL"))
  )

/** `wiz <args>` as a running process. */
export const startWiz = (args: ReadonlyArray<string>, options: Options) =>
  start(process.execPath, (main) => [main, ...args], options)

/** `wiz <args>`, run to its end. */
export const wiz = (args: ReadonlyArray<string>, options: Options): Effect.Effect<Exited, Error> =>
  Effect.scoped(Effect.flatMap(startWiz(args, options), (running) => running.exited()))

/** A bash script in which `wiz` is the executable, as a running process. */
export const startBash = (script: string, options: Options) =>
  start("bash", () => ["-c", `wiz() { "$WIZ_NODE" "$WIZ_MAIN" "$@"; }\n${script}`], options)

/** A bash script in which `wiz` is the executable, run to its end. */
export const bash = (script: string, options: Options): Effect.Effect<Exited, Error> =>
  Effect.scoped(Effect.flatMap(startBash(script, options), (running) => running.exited()))

/** The embedded model answering at once, and no progress line. */
export const instant = ["--time-to-first-token", "0", "--per-token", "0", "--no-progress"] as const
