/**
 * The output of `wiz run`: one JSON line per record, written as each task finishes, to stdout
 * or to a file. A file is truncated, or appended to when resuming; then what it already holds
 * is read back as a {@link TaskSource.ResumeSet} so no task or invalid line is written twice.
 * A last line cut short by a crash is tolerated: it is not counted as a record (its task runs
 * again) and a newline is written before the first new record, so records never share a line.
 *
 * Writes are serialized: records of finished tasks and of invalid lines come from different
 * fibers, and each lands as one whole line.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import * as RecordSink from "wiz-effect/cli/RecordSink"
 *
 * const program = Effect.gen(function*() {
 *   const resume = yield* RecordSink.readResumeSet("out/results.jsonl")
 *   const sink = yield* RecordSink.file("out/results.jsonl", { append: true })
 *   // yield* sink.write(record)
 * }).pipe(Effect.scoped)
 * ```
 *
 * @since 0.1.0
 */
import { FileSystem, Path } from "@effect/platform"
import type { PlatformError } from "@effect/platform/Error"
import { Effect, Option, Schema, Stream } from "effect"
import type { Scope } from "effect"
import { encodeRecord, type TaskRecord } from "../agent/AgentTask.js"
import { Stdio } from "./Stdio.js"
import { reasonOf, type ResumeSet } from "./TaskSource.js"

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
 * What {@link readResumeSet} found: the resume set, and how many lines were not records (a
 * line cut short by a crash).
 *
 * @since 0.1.0
 * @category models
 */
export interface Resumed extends ResumeSet {
  readonly unreadableLines: number
}

const failure = (path: string, operation: "read" | "write") => (error: PlatformError) =>
  new OutputFailed({
    path,
    operation,
    reason: reasonOf(error)
  })

const encoder = new TextEncoder()

const line = (record: TaskRecord): string => `${JSON.stringify(encodeRecord(record))}\n`

const makeSink = (writeText: (text: string) => Effect.Effect<void, OutputFailed>): Effect.Effect<RecordSink> =>
  Effect.map(Effect.makeSemaphore(1), (mutex) => ({
    write: (record) => mutex.withPermits(1)(writeText(line(record)))
  }))

/**
 * Records on stdout.
 *
 * @since 0.1.0
 * @category constructors
 */
export const stdout: Effect.Effect<RecordSink, never, Stdio> = Effect.flatMap(Stdio, (stdio) =>
  makeSink((text) => Effect.mapError(stdio.stdout(text), failure("-", "write"))))

/**
 * Records in a file, kept open for the scope. Missing parent directories are created. With
 * `append: false` the file is truncated; with `append: true` records go after what it holds,
 * on a fresh line.
 *
 * @since 0.1.0
 * @category constructors
 */
export const file = (
  path: string,
  options: { readonly append: boolean }
): Effect.Effect<RecordSink, OutputFailed, FileSystem.FileSystem | Path.Path | Scope.Scope> =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const dir = (yield* Path.Path).dirname(path)
    yield* fs.makeDirectory(dir, { recursive: true })
    const handle = yield* fs.open(path, { flag: options.append ? "a+" : "w" })
    const size = (yield* handle.stat).size
    if (options.append && size > 0) {
      yield* handle.seek(size - BigInt(1), "start")
      const last = yield* handle.readAlloc(1)
      if (Option.isSome(last) && last.value[0] !== 0x0a) {
        yield* handle.writeAll(encoder.encode("\n"))
      }
    }
    return yield* makeSink((text) => Effect.mapError(handle.writeAll(encoder.encode(text)), failure(path, "write")))
  }).pipe(Effect.mapError(failure(path, "write")))

/**
 * Records on stdout when `output` is none, else in that file.
 *
 * @since 0.1.0
 * @category constructors
 */
export const open = (
  output: Option.Option<string>,
  options: { readonly append: boolean }
): Effect.Effect<RecordSink, OutputFailed, Stdio | FileSystem.FileSystem | Path.Path | Scope.Scope> =>
  Option.match(output, { onNone: () => stdout, onSome: (path) => file(path, options) })

const RecordKey = Schema.parseJson(Schema.Union(
  Schema.Struct({ status: Schema.Literal("succeeded", "failed"), id: Schema.String }),
  Schema.Struct({ status: Schema.Literal("invalid"), line: Schema.Int })
))
const decodeRecordKey = Schema.decodeUnknownOption(RecordKey)

/**
 * The ids and invalid lines an output file already records; an empty set when the file does
 * not exist yet. Lines that are not records are counted in `unreadableLines`, not failed on.
 *
 * @since 0.1.0
 * @category constructors
 */
export const readResumeSet = (path: string): Effect.Effect<Resumed, OutputFailed, FileSystem.FileSystem> =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const ids = new Set<string>()
    const lines = new Set<number>()
    let unreadableLines = 0
    if (!(yield* fs.exists(path))) return { ids, lines, unreadableLines }
    yield* fs.stream(path).pipe(
      Stream.decodeText(),
      Stream.splitLines,
      Stream.runForEach((text) =>
        Effect.sync(() => {
          if (text.trim().length === 0) return
          const key = decodeRecordKey(text)
          if (Option.isNone(key)) {
            unreadableLines++
          } else if (key.value.status === "invalid") {
            lines.add(key.value.line)
          } else {
            ids.add(key.value.id)
          }
        })
      )
    )
    return { ids, lines, unreadableLines }
  }).pipe(Effect.mapError(failure(path, "read")))
