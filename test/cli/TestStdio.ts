/**
 * A `Stdio` for tests: stdin from a string (or bytes), stdout and stderr collected in memory.
 * `terminal` collects both in the order they were written, as one screen would show them.
 */
import type { PlatformError } from "@effect/platform/Error"
import { Effect, Layer, Option, Stream } from "effect"
import type { FileId } from "../../src/cli/FileId.js"
import { Stdio } from "../../src/cli/Stdio.js"

export interface TestStdio {
  readonly layer: Layer.Layer<Stdio>
  readonly stdout: () => string
  readonly stderr: () => string
  /** stdout and stderr interleaved as written. */
  readonly terminal: () => string
  /** Each stderr write, in order. */
  readonly stderrWrites: ReadonlyArray<string>
}

export interface Options {
  readonly stdin?: string | Uint8Array
  /** stderr is a terminal. */
  readonly isTTY?: boolean
  /** The width of the stderr terminal (0: unknown). */
  readonly columns?: number
  /** stdin is a terminal. */
  readonly stdinIsTTY?: boolean
  /** stdout is a terminal. */
  readonly stdoutIsTTY?: boolean
  readonly stdoutClosed?: boolean
  readonly stdinFile?: FileId
  readonly stdoutFile?: FileId
  /** Fail stdout writes from the nth one on (0-based), with this error. */
  readonly failStdout?: { readonly after: number; readonly error: PlatformError }
}

export const make = (options: Options = {}): TestStdio => {
  const out: Array<string> = []
  const err: Array<string> = []
  const screen: Array<string> = []
  const stdin = typeof options.stdin === "string" || options.stdin === undefined
    ? new TextEncoder().encode(options.stdin ?? "")
    : options.stdin
  let stdoutWrites = 0
  return {
    layer: Layer.succeed(
      Stdio,
      Stdio.of({
        stdin: Stream.make(stdin),
        stdout: (text) =>
          Effect.suspend(() => {
            const failure = options.failStdout
            if (failure !== undefined && stdoutWrites++ >= failure.after) return Effect.fail(failure.error)
            out.push(text)
            screen.push(text)
            return Effect.void
          }),
        stderr: (text) =>
          Effect.sync(() => {
            err.push(text)
            screen.push(text)
          }),
        stdinIsTTY: options.stdinIsTTY ?? false,
        stdoutIsTTY: options.stdoutIsTTY ?? false,
        stderrIsTTY: options.isTTY ?? false,
        stderrColumns: Effect.succeed(options.columns ?? 0),
        stdoutClosed: options.stdoutClosed ?? false,
        stdinFile: Option.fromNullable(options.stdinFile),
        stdoutFile: Option.fromNullable(options.stdoutFile)
      })
    ),
    stdout: () => out.join(""),
    stderr: () => err.join(""),
    terminal: () => screen.join(""),
    stderrWrites: err
  }
}
