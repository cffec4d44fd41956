/**
 * Where the records of `wiz run` go: one JSON line per record, written as each task finishes,
 * on stdout or into a file (`OutputFile` opens files: truncated, appended to, or rewritten).
 *
 * Writes are serialized (records of finished tasks and of invalid lines come from different
 * fibers, and each lands as one whole line) and uninterruptible (a signal never leaves half a
 * line, and a record is counted exactly when it was written). A write that fails fails the
 * run: nothing is counted as written that was not.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import * as RecordSink from "wiz-effect/cli/RecordSink"
 *
 * const program = Effect.gen(function*() {
 *   const sink = yield* RecordSink.stdout
 *   // yield* sink.write(record)
 * })
 * ```
 *
 * @since 0.1.0
 */
import type { PlatformError } from "@effect/platform/Error"
import { Effect, Schema } from "effect"
import { encodeRecord, type TaskRecord } from "../agent/AgentTask.js"
import { Stdio } from "./Stdio.js"
import { reasonOf } from "./TaskSource.js"

/**
 * The output could not be read (to resume) or written.
 *
 * @since 0.1.0
 * @category errors
 */
export class OutputFailed extends Schema.TaggedError<OutputFailed>()("OutputFailed", {
  /** The file, or `-` for stdout. */
  path: Schema.String,
  operation: Schema.Literal("read", "write"),
  reason: Schema.String
}) {
  override get message(): string {
    return `cannot ${this.operation} output ${this.path === "-" ? "on stdout" : `"${this.path}"`}: ${this.reason}`
  }
}

/**
 * Where records go.
 *
 * @since 0.1.0
 * @category models
 */
export interface RecordSink {
  /** Write one record as one JSON line. */
  readonly write: (record: TaskRecord) => Effect.Effect<void, OutputFailed>
}

/**
 * An I/O error of `path` (`-` for stdout) as an {@link OutputFailed}.
 *
 * @since 0.1.0
 * @category errors
 */
export const failure = (path: string, operation: "read" | "write") => (error: PlatformError) =>
  new OutputFailed({ path, operation, reason: reasonOf(error) })

/**
 * One record as its line of JSON Lines.
 *
 * @since 0.1.0
 * @category encoding
 */
export const line = (record: TaskRecord): string => `${JSON.stringify(encodeRecord(record))}\n`

/**
 * A sink writing each record's line with `writeText`, one write at a time, each
 * uninterruptible; a failed write is an {@link OutputFailed} for `path`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  path: string,
  writeText: (text: string) => Effect.Effect<void, PlatformError>
): Effect.Effect<RecordSink> =>
  Effect.map(Effect.makeSemaphore(1), (mutex) => ({
    write: (record) =>
      mutex.withPermits(1)(Effect.uninterruptible(Effect.mapError(writeText(line(record)), failure(path, "write"))))
  }))

/**
 * Records on stdout. A stdout that was closed when the process started fails here, before any
 * task runs, instead of every record vanishing.
 *
 * @since 0.1.0
 * @category constructors
 */
export const stdout: Effect.Effect<RecordSink, OutputFailed, Stdio> = Effect.flatMap(Stdio, (stdio) =>
  stdio.stdoutClosed
    ? Effect.fail(
      new OutputFailed({
        path: "-",
        operation: "write",
        reason: "standard output is closed, so every record would be lost; give --output FILE, or redirect stdout " +
          "(-o /dev/null if the records are really not wanted)"
      })
    )
    : make("-", stdio.stdout))
