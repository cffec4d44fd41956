/**
 * The events file of `wiz run --events FILE`: every event the agent publishes during the run —
 * tasks started and finished, retries scheduled and given up, breaker transitions, fallbacks,
 * coalesced and memoized answers — one JSON line each, encoded with its schema
 * (`AgentEvent.toJson`, so each line decodes back with `AgentEvent.fromJson`), written as the
 * events happen. It is as safe as the records' output:
 *
 * - it is this run's: created or truncated once the input and the output are open, and never
 *   the input or the output (a usage error, by name or by file, before anything is opened);
 * - each batch of events is one write, uninterruptible, so a signal never leaves half a line;
 *   the file is flushed to disk at the end (a FIFO, a process substitution `>(jq .)` or
 *   `/dev/null` is appended to and never synced: `OutputFile.openWritable`);
 * - a write that fails is an {@link EventsFailed} naming the file, and ends the run like a
 *   record write that fails (non-zero, with the summary so far).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import * as EventsFile from "wiz-effect/cli/EventsFile"
 *
 * const program = Effect.gen(function*() {
 *   const file = yield* EventsFile.open("out/events.jsonl")
 *   // yield* file.write(events) ...
 *   yield* file.commit
 * }).pipe(Effect.scoped)
 * ```
 *
 * @since 0.1.0
 */
import { FileSystem, Path } from "@effect/platform"
import type { PlatformError } from "@effect/platform/Error"
import { Effect, Option, Schema } from "effect"
import type { Scope } from "effect"
import * as AgentEvent from "../events/AgentEvent.js"
import * as FileId from "./FileId.js"
import * as OutputFile from "./OutputFile.js"
import { Stdio } from "./Stdio.js"
import { reasonOf } from "./TaskSource.js"
import { usage, type UsageError } from "./UsageError.js"

/**
 * The events file could not be written.
 *
 * @since 0.1.0
 * @category errors
 */
export class EventsFailed extends Schema.TaggedError<EventsFailed>()("EventsFailed", {
  path: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `cannot write events "${this.path}": ${this.reason}`
  }
}

/**
 * An open events file.
 *
 * @since 0.1.0
 * @category models
 */
export interface EventsFile {
  /** Append the events, one JSON line each, in one uninterruptible write. */
  readonly write: (events: ReadonlyArray<AgentEvent.AgentEvent>) => Effect.Effect<void, EventsFailed>
  /** Flush what was written to disk. */
  readonly commit: Effect.Effect<void, EventsFailed>
}

const encoder = new TextEncoder()

/**
 * Refuse an events file that is the input or the records' output (stdout when `output` is
 * none): by file (a link, `./x` and `x`, a redirection) and, for files that do not exist yet, by
 * name. `-` is refused too: the events need a file of their own. A device (`/dev/null`) is no
 * file and may be shared.
 *
 * @since 0.1.0
 * @category predicates
 */
export const check = (
  events: string,
  input: string,
  output: Option.Option<string>
): Effect.Effect<void, UsageError, Stdio | FileSystem.FileSystem | Path.Path> =>
  Effect.gen(function*() {
    if (events === "-") return yield* usage("--events needs a FILE of its own: the records may be on stdout, and - is stdin")
    const stdio = yield* Stdio
    const paths = yield* Path.Path
    const eventsId = yield* FileId.ofPath(events)
    // a path that is there is compared by file (a device such as /dev/null is no file: shared
    // harmlessly); one that is not there yet, by name
    const exists = yield* Effect.orElseSucceed((yield* FileSystem.FileSystem).exists(events), () => false)
    const sameName = (path: string) => !exists && paths.resolve(path) === paths.resolve(events)
    const inputId = input === "-" ? stdio.stdinFile : yield* FileId.ofPath(input)
    if (FileId.same(eventsId, inputId) || (input !== "-" && sameName(input))) {
      return yield* usage(
        `the events file "${events}" is the input ${input === "-" ? "(stdin)" : `"${input}"`}, one file: ` +
          "writing the events would destroy the tasks; write them to another file"
      )
    }
    const outputId = Option.isNone(output) ? stdio.stdoutFile : yield* FileId.ofPath(output.value)
    if (FileId.same(eventsId, outputId) || Option.exists(output, sameName)) {
      return yield* usage(
        `the events file "${events}" is ${Option.match(output, { onNone: () => "standard output", onSome: (path) => `the output "${path}"` })}, ` +
          "one file: records and events would be mixed in it; write them to different files"
      )
    }
  })

/**
 * Create or truncate the events file at `path` for the scope (missing parent directories are
 * created).
 *
 * @since 0.1.0
 * @category constructors
 */
export const open = (path: string): Effect.Effect<EventsFile, EventsFailed, FileSystem.FileSystem | Path.Path | Scope.Scope> =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const paths = yield* Path.Path
    const failed = (error: PlatformError) => new EventsFailed({ path, reason: reasonOf(error) })
    yield* Effect.mapError(fs.makeDirectory(paths.dirname(path), { recursive: true }), failed)
    const { handle, sync } = yield* Effect.mapError(OutputFile.openWritable(path, "w"), failed)
    const mutex = yield* Effect.makeSemaphore(1)
    const encode = (event: AgentEvent.AgentEvent) =>
      Effect.mapError(AgentEvent.toJson(event), (error) => new EventsFailed({ path, reason: `an event did not encode: ${error.message}` }))
    return {
      write: (events) =>
        events.length === 0 ? Effect.void : Effect.flatMap(Effect.forEach(events, encode), (lines) =>
          mutex.withPermits(1)(Effect.uninterruptible(
            Effect.mapError(handle.writeAll(encoder.encode(lines.join("\n") + "\n")), failed)
          ))),
      commit: Effect.mapError(sync, failed)
    }
  })
