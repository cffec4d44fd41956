/**
 * The output file of `wiz run --output FILE`: never the input, what it already records, and
 * the three ways it is written, none of which loses a record:
 *
 * - `truncate` (a fresh run): emptied and written as tasks finish.
 * - `append` (`--resume`): what it records is kept; a last line torn by a crash (a record cut
 *   short mid-write, so not JSON) is cut off first, so the file stays JSON Lines and that
 *   task runs again. Any other line that is not a record is an {@link OutputCorrupt} naming
 *   it: the file is not touched and the run does not start.
 * - `rewrite` (`--retry-failed`): the tasks that failed run again and each ends with exactly
 *   one record. The new file is written beside the old one (same directory, so the rename is
 *   atomic) and renamed over it when the run ends, normally or by a signal; a crash or
 *   `kill -9` midway leaves the old file as it was, never a half-rewritten one. A failed
 *   record whose task did not run again (it is no longer in the input) is kept.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import * as OutputFile from "wiz-effect/cli/OutputFile"
 *
 * const program = Effect.gen(function*() {
 *   const existing = yield* OutputFile.scan("out/results.jsonl")
 *   const output = yield* OutputFile.open("out/results.jsonl", "rewrite", existing)
 *   // yield* output.sink.write(record) ...
 *   yield* output.commit
 * }).pipe(Effect.scoped)
 * ```
 *
 * @since 0.1.0
 */
import { FileSystem, Path } from "@effect/platform"
import { Effect, Option, Schema, Stream } from "effect"
import type { Scope } from "effect"
import * as FileId from "./FileId.js"
import * as RecordSink from "./RecordSink.js"
import { Stdio } from "./Stdio.js"
import { type Line, splitLines } from "./TaskSource.js"

/**
 * A line of the output, other than a torn last one, is not a record: `wiz run` will not guess
 * what it was, and touches nothing.
 *
 * @since 0.1.0
 * @category errors
 */
export class OutputCorrupt extends Schema.TaggedError<OutputCorrupt>()("OutputCorrupt", {
  path: Schema.String,
  line: Schema.Int,
  reason: Schema.String
}) {
  override get message(): string {
    return `output "${this.path}" line ${this.line} is not a record (${this.reason}); only a last line torn by a crash ` +
      `is cut off by itself: mend or delete line ${this.line}, then run again`
  }
}

/**
 * What an output file already records.
 *
 * @since 0.1.0
 * @category models
 */
export interface Existing {
  /** Ids of the task records, succeeded or failed. */
  readonly ids: ReadonlySet<string>
  /** Ids whose record says the task failed. */
  readonly failed: ReadonlySet<string>
  /**
   * Ids whose record says the task was never run (`BatchStopped`: the batch stopped when the
   * provider kept refusing the key): `--resume` runs them again.
   */
  readonly notRun: ReadonlySet<string>
  /** Input lines with an invalid-line record. */
  readonly lines: ReadonlySet<number>
  /**
   * The models that answered, each with its count of answers: the `model` of the succeeded
   * records no fallback answered (failed records name no model).
   */
  readonly models: ReadonlyMap<string, number>
  /** A last line torn by a crash, cut off before anything is written: its number and length. */
  readonly torn: Option.Option<{ readonly line: number; readonly bytes: number }>
  /** The bytes kept: all of the file but a torn last line. */
  readonly keep: number
  /** The kept bytes end in a whole record without its newline. */
  readonly missingNewline: boolean
}

/**
 * An output that does not exist yet.
 *
 * @since 0.1.0
 * @category constructors
 */
export const none: Existing = {
  ids: new Set(),
  failed: new Set(),
  notRun: new Set(),
  lines: new Set(),
  models: new Map(),
  torn: Option.none(),
  keep: 0,
  missingNewline: false
}

const RecordKey = Schema.Union(
  Schema.Struct({
    status: Schema.Literal("succeeded", "failed"),
    id: Schema.String,
    model: Schema.optional(Schema.String),
    degraded: Schema.optional(Schema.Boolean),
    error: Schema.optional(Schema.Struct({ _tag: Schema.String }))
  }),
  Schema.Struct({ status: Schema.Literal("invalid"), line: Schema.Int })
)
const decodeRecordKey = Schema.decodeUnknownOption(RecordKey)

/** What one output line is: a record's key, nothing (blank), or why it is not a record. */
const classify = (line: Line): typeof RecordKey.Type | "blank" | { readonly notARecord: string } => {
  if (typeof line !== "string") return { notARecord: "not valid UTF-8" }
  if (line.trim().length === 0) return "blank"
  let json: unknown
  try {
    json = JSON.parse(line)
  } catch {
    return { notARecord: "not valid JSON" }
  }
  return Option.getOrElse(decodeRecordKey(json), () => ({ notARecord: "no \"status\" with an \"id\" or a \"line\"" }))
}

/**
 * Read what the output file at `path` records; {@link none} when it does not exist. Fails with
 * {@link OutputCorrupt} on a line that is not a record, unless it is the last line and has no
 * newline (a record torn by a crash), which is reported in `torn` instead.
 *
 * @since 0.1.0
 * @category constructors
 */
export const scan = (path: string): Effect.Effect<Existing, RecordSink.OutputFailed | OutputCorrupt, FileSystem.FileSystem> =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    if (!(yield* Effect.mapError(fs.exists(path), RecordSink.failure(path, "read")))) return none
    const ids = new Set<string>()
    const failed = new Set<string>()
    const notRun = new Set<string>()
    const lines = new Set<number>()
    const models = new Map<string, number>()
    let size = 0
    let afterLastNewline = 0
    let count = 0
    let bad: Option.Option<{ readonly line: number; readonly reason: string }> = Option.none()
    yield* fs.stream(path).pipe(
      Stream.tap((chunk) =>
        Effect.sync(() => {
          const newline = chunk.lastIndexOf(0x0a)
          if (newline !== -1) afterLastNewline = size + newline + 1
          size += chunk.byteLength
        })
      ),
      Stream.mapError(RecordSink.failure(path, "read")),
      splitLines,
      Stream.runForEach((line) =>
        Effect.suspend(() => {
          count++
          if (Option.isSome(bad)) return Effect.fail(new OutputCorrupt({ path, ...bad.value }))
          const key = classify(line)
          if (key === "blank") return Effect.void
          if ("notARecord" in key) {
            bad = Option.some({ line: count, reason: key.notARecord })
          } else if (key.status === "invalid") {
            lines.add(key.line)
          } else {
            ids.add(key.id)
            if (key.status === "failed") failed.add(key.id)
            else failed.delete(key.id)
            if (key.status === "failed" && key.error?._tag === "BatchStopped") notRun.add(key.id)
            else notRun.delete(key.id)
            if (key.status === "succeeded" && key.model !== undefined && key.degraded !== true) {
              models.set(key.model, (models.get(key.model) ?? 0) + 1)
            }
          }
          return Effect.void
        })
      )
    )
    const unterminated = size > afterLastNewline
    if (Option.isSome(bad)) {
      if (!unterminated) return yield* new OutputCorrupt({ path, ...bad.value })
      return { ids, failed, notRun, lines, models, torn: Option.some({ line: bad.value.line, bytes: size - afterLastNewline }), keep: afterLastNewline, missingNewline: false }
    }
    return { ids, failed, notRun, lines, models, torn: Option.none(), keep: size, missingNewline: unterminated }
  })

/**
 * Whether the run's output is its input: one file by device and inode (a symbolic or hard
 * link, `./x` and `x`, stdin or stdout redirected to it), checked before either is opened.
 * Stdout (`output` none) counts when it is redirected to a file.
 *
 * @since 0.1.0
 * @category predicates
 */
export const isInput = (input: string, output: Option.Option<string>): Effect.Effect<boolean, never, Stdio> =>
  Effect.gen(function*() {
    const stdio = yield* Stdio
    const inputId = input === "-" ? stdio.stdinFile : yield* FileId.ofPath(input)
    const outputId = Option.isNone(output) ? stdio.stdoutFile : yield* FileId.ofPath(output.value)
    return FileId.same(inputId, outputId)
  })

/**
 * How {@link open} writes the file.
 *
 * @since 0.1.0
 * @category models
 */
export type Mode = "truncate" | "append" | "rewrite"

/**
 * An opened output: where records go, and the step that finishes it.
 *
 * @since 0.1.0
 * @category models
 */
export interface Output {
  readonly sink: RecordSink.RecordSink
  /**
   * Flush the records to disk and, for a rewrite, put the new file in place of the old one.
   * A rewrite not committed by the time the scope closes (a failure, a signal) is committed
   * then, so the work done is kept.
   */
  readonly commit: Effect.Effect<void, RecordSink.OutputFailed>
}

const encoder = new TextEncoder()

/**
 * Open `path` to write for the scope (`w`: created or truncated, `a`: appended to), and the step
 * that flushes what was written to disk. A path that is not a regular file — a FIFO, a process
 * substitution (`-o >(jq .)`), a device (`/dev/null`) — is opened to append whatever `flag`
 * says: such a file has no offset to write at (`ESPIPE`) and nothing to truncate, and it is
 * never synced (`fsync` there is `EINVAL`: nothing on disk to flush).
 *
 * @since 0.1.0
 * @category constructors
 */
export const openWritable = (path: string, flag: "w" | "a") =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const regular = Option.match(yield* Effect.option(fs.stat(path)), {
      onNone: () => true,
      onSome: (info) => info.type === "File"
    })
    const handle = yield* fs.open(path, { flag: regular ? flag : "a" })
    return { handle, sync: regular ? handle.sync : Effect.void }
  })

/**
 * Open the output file at `path` for the scope, as `mode` says (see the module doc), given
 * what {@link scan} found in it; a rewrite drops the records of the tasks in `again` (they run
 * again), keeping the old record of one that does not get a new one. Missing parent
 * directories are created.
 *
 * @since 0.1.0
 * @category constructors
 */
export const open = (
  path: string,
  mode: Mode,
  existing: Existing,
  again: ReadonlySet<string> = existing.failed
): Effect.Effect<Output, RecordSink.OutputFailed, FileSystem.FileSystem | Path.Path | Stdio | Scope.Scope> =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const paths = yield* Path.Path
    yield* fs.makeDirectory(paths.dirname(path), { recursive: true })
    if (mode !== "rewrite") {
      const { handle, sync } = yield* openWritable(path, mode === "append" ? "a" : "w")
      if (mode === "append") {
        if (Option.isSome(existing.torn)) yield* handle.truncate(existing.keep)
        if (existing.missingNewline) yield* handle.writeAll(encoder.encode("\n"))
      }
      const sink = yield* RecordSink.make(path, (text) => handle.writeAll(encoder.encode(text)))
      return { sink, commit: Effect.mapError(sync, RecordSink.failure(path, "write")) }
    }
    return yield* rewrite(path, existing, again)
  }).pipe(Effect.catchTags({
    SystemError: RecordSink.failure(path, "write"),
    BadArgument: RecordSink.failure(path, "write")
  }))

const rewrite = (path: string, existing: Existing, again: ReadonlySet<string>) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const paths = yield* Path.Path
    const stdio = yield* Stdio
    const exists = yield* fs.exists(path)
    // a symbolic link stays one: the file it names is the one replaced
    const target = exists ? yield* fs.realPath(path) : path
    const mode = exists ? (yield* fs.stat(target)).mode : undefined
    const temp = paths.join(paths.dirname(target), `${paths.basename(target)}.wiz-tmp-${process.pid}`)
    const handle = yield* fs.open(temp, { flag: "w" })
    const writeText = (text: string) => handle.writeAll(encoder.encode(text))

    // the old records that stay as they are, and (at commit) those of tasks run again that got no new one
    const copy = (keep: (key: typeof RecordKey.Type) => boolean) =>
      exists
        ? fs.stream(target).pipe(
          splitLines,
          Stream.runForEach((line) => {
            const key = classify(line)
            return typeof line === "string" && key !== "blank" && !("notARecord" in key) && keep(key)
              ? writeText(`${line}\n`)
              : Effect.void
          })
        )
        : Effect.void
    // a failed record goes if its task runs again, or if a later record of its task succeeded
    yield* copy((key) => key.status !== "failed" || !(again.has(key.id) || !existing.failed.has(key.id)))

    const written = new Set<string>()
    const sink = yield* RecordSink.make(temp, writeText)
    let committed = false
    const commit = Effect.suspend(() => {
      if (committed) return Effect.void
      committed = true
      return Effect.gen(function*() {
        yield* copy((key) => key.status === "failed" && again.has(key.id) && !written.has(key.id))
        yield* handle.sync
        if (mode !== undefined) yield* fs.chmod(temp, mode & 0o7777)
        yield* fs.rename(temp, target)
      }).pipe(
        Effect.mapError(RecordSink.failure(path, "write")),
        Effect.tapError(() => Effect.ignore(fs.remove(temp)))
      )
    })
    yield* Effect.addFinalizer(() =>
      commit.pipe(
        Effect.catchAll((error) => stdio.stderr(`wiz: ${error.message}; "${path}" is left as it was\n`))
      )
    )
    return {
      sink: {
        write: (record) =>
          Effect.tap(sink.write(record), () => {
            if (record.status !== "invalid") written.add(record.id)
          })
      },
      commit
    } satisfies Output
  })
