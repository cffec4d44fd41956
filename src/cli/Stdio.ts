/**
 * The process's standard streams as a service, so the `wiz` command reads stdin and writes
 * records, progress and summary through one replaceable interface: a test provides its own and
 * reads back exactly what was written, with no process streams involved.
 *
 * Records go to `stdout` (each write completes when the stream has taken the text, so a slow
 * consumer slows the writer instead of filling memory); progress and the summary go to
 * `stderr`, which is written synchronously because a redrawn line (`\r`) must not interleave.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import * as Stdio from "wiz-effect/cli/Stdio"
 *
 * const program = Effect.gen(function*() {
 *   const stdio = yield* Stdio.Stdio
 *   yield* stdio.stderr(stdio.stderrIsTTY ? "\rworking" : "working\n")
 * }).pipe(Effect.provide(Stdio.layer))
 * ```
 *
 * @since 0.1.0
 */
import { type PlatformError, SystemError } from "@effect/platform/Error"
import * as NodeStream from "@effect/platform-node/NodeStream"
import { Context, Effect, Layer } from "effect"
import type { Stream } from "effect"

/**
 * The standard streams.
 *
 * @since 0.1.0
 * @category tags
 */
export class Stdio extends Context.Tag("wiz-effect/cli/Stdio")<Stdio, Stdio.Service>() {}

/**
 * @since 0.1.0
 */
export declare namespace Stdio {
  /**
   * @since 0.1.0
   * @category models
   */
  export interface Service {
    /** The bytes of standard input. */
    readonly stdin: Stream.Stream<Uint8Array, PlatformError>
    /** Write text to standard output; completes once the stream has accepted it. */
    readonly stdout: (text: string) => Effect.Effect<void, PlatformError>
    /** Write text to standard error. */
    readonly stderr: (text: string) => Effect.Effect<void>
    /** Whether standard error is a terminal (a redrawn progress line) or not (plain lines). */
    readonly stderrIsTTY: boolean
  }
}

const streamError = (method: string) => (cause: unknown): PlatformError =>
  new SystemError({
    module: "Stream",
    method,
    reason: "Unknown",
    description: cause instanceof Error ? cause.message : String(cause),
    cause
  })

/**
 * The standard streams of this Node.js process. A failed stdout write (a closed pipe, as in
 * `wiz run tasks.jsonl | head`) fails that write's effect; while the layer is alive a listener
 * keeps Node.js from also throwing the same error as an uncaught `'error'` event.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<Stdio> = Layer.scoped(
  Stdio,
  Effect.acquireRelease(
    Effect.sync(() => {
      const reportedByWrite = () => {}
      process.stdout.on("error", reportedByWrite)
      return reportedByWrite
    }),
    (listener) =>
      Effect.sync(() => {
        process.stdout.off("error", listener)
      })
  ).pipe(Effect.as(Stdio.of({
    stdin: NodeStream.fromReadable(() => process.stdin, streamError("stdin"), { closeOnDone: false }),
    stdout: (text) =>
      Effect.async<void, PlatformError>((resume) => {
        process.stdout.write(text, (error) => resume(error ? Effect.fail(streamError("stdout")(error)) : Effect.void))
      }),
    stderr: (text) =>
      Effect.sync(() => {
        process.stderr.write(text)
      }),
    stderrIsTTY: process.stderr.isTTY === true
  })))
)
