/**
 * A `Stdio` for tests: stdin from a string, stdout and stderr collected in memory.
 */
import { Effect, Layer, Stream } from "effect"
import { Stdio } from "../../src/cli/Stdio.js"

export interface TestStdio {
  readonly layer: Layer.Layer<Stdio>
  readonly stdout: () => string
  readonly stderr: () => string
  /** Each stderr write, in order. */
  readonly stderrWrites: ReadonlyArray<string>
}

export const make = (options: { readonly stdin?: string; readonly isTTY?: boolean } = {}): TestStdio => {
  const out: Array<string> = []
  const err: Array<string> = []
  return {
    layer: Layer.succeed(
      Stdio,
      Stdio.of({
        stdin: Stream.make(new TextEncoder().encode(options.stdin ?? "")),
        stdout: (text) =>
          Effect.sync(() => {
            out.push(text)
          }),
        stderr: (text) =>
          Effect.sync(() => {
            err.push(text)
          }),
        stderrIsTTY: options.isTTY ?? false
      })
    ),
    stdout: () => out.join(""),
    stderr: () => err.join(""),
    stderrWrites: err
  }
}
