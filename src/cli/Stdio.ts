/**
 * The process's standard streams as a service, so the `wiz` command reads stdin and writes
 * records, progress and summary through one replaceable interface: a test provides its own and
 * reads back exactly what was written, with no process streams involved.
 *
 * Records go to `stdout` (each write completes when the stream has taken the text, so a slow
 * consumer slows the writer instead of filling memory); progress and the summary go to
 * `stderr`, which is written synchronously because a redrawn line (`\r`) must not interleave.
 * The service also says what the streams are: terminals (a redrawn progress line, colours in
 * help, a word on how to end tasks typed on stdin), which files they are (so the input is never also the output), and whether stdout was
 * closed before the process started (Node.js silently puts `/dev/null` in its place).
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
import { Context, Effect, Layer, Option } from "effect"
import type { Stream } from "effect"
import { readFileSync, readlinkSync } from "node:fs"
import { isatty } from "node:tty"
import * as FileId from "./FileId.js"

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
    /** Whether standard input is a terminal (someone would have to type the tasks). */
    readonly stdinIsTTY: boolean
    /** Whether standard output is a terminal. */
    readonly stdoutIsTTY: boolean
    /** Whether standard error is a terminal (a redrawn progress line) or not (plain lines). */
    readonly stderrIsTTY: boolean
    /** The width of the terminal standard error is, now (it may be resized); 0 when unknown. */
    readonly stderrColumns: Effect.Effect<number>
    /**
     * Standard output was closed when the process started (`wiz run t.jsonl >&-`): every
     * record written there would be lost without an error.
     */
    readonly stdoutClosed: boolean
    /** The file standard input reads, when it is one (`< tasks.jsonl`, a pipe, a terminal). */
    readonly stdinFile: Option.Option<FileId.FileId>
    /** The file standard output writes, when it is one. */
    readonly stdoutFile: Option.Option<FileId.FileId>
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

// Node.js opens /dev/null read-write in place of a standard stream that was closed at start-up
// (node.cc, PlatformInit), so `>&-` looks like a working stdout. A shell's `> /dev/null` opens
// it write-only: the access mode tells the two apart. Linux only (/proc); elsewhere, false.
// `stdio: "ignore"` in a Node.js parent also opens /dev/null read-write, and is treated the
// same way: records written there are lost too, and `-o /dev/null` says so on purpose.
const isClosedAtStart = (fd: number): boolean => {
  try {
    const flags = /^flags:\s*([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, "utf8"))
    const O_ACCMODE = 3
    const O_RDWR = 2
    return flags !== null && (Number.parseInt(flags[1]!, 8) & O_ACCMODE) === O_RDWR &&
      readlinkSync(`/proc/self/fd/${fd}`) === "/dev/null"
  } catch {
    return false
  }
}

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
  ).pipe(Effect.map(() => Stdio.of({
    stdin: NodeStream.fromReadable(() => process.stdin, streamError("stdin"), { closeOnDone: false }),
    stdout: (text) =>
      Effect.async<void, PlatformError>((resume) => {
        process.stdout.write(text, (error) => resume(error ? Effect.fail(streamError("stdout")(error)) : Effect.void))
      }),
    stderr: (text) =>
      Effect.sync(() => {
        process.stderr.write(text)
      }),
    // asked of the descriptor: touching `process.stdin` would open the stream
    stdinIsTTY: isatty(0),
    stdoutIsTTY: process.stdout.isTTY === true,
    stderrIsTTY: process.stderr.isTTY === true,
    stderrColumns: Effect.sync(() => process.stderr.columns ?? 0),
    stdoutClosed: isClosedAtStart(1),
    stdinFile: FileId.ofDescriptor(0),
    stdoutFile: FileId.ofDescriptor(1)
  })))
)
