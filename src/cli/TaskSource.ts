/**
 * The input of `wiz run`: JSON Lines read as a stream (never whole in memory), each line
 * numbered and classified as a task to run, an invalid line (with what was wrong), or a line a
 * previous run already answered (`--resume`). An id seen on an earlier line makes a later line
 * invalid ("duplicate id "x" (first on line 3)"), so every id names exactly one task. Blank
 * lines are skipped but still counted, so line numbers match an editor's.
 *
 * @example
 * ```ts
 * import { Stream } from "effect"
 * import * as TaskSource from "wiz-effect/cli/TaskSource"
 *
 * const entries = TaskSource.entries(Stream.make('{"id":"a","prompt":"Hi"}', "", "{oops"))
 * // Task (line 1), Invalid (line 3: not valid JSON ...)
 * ```
 *
 * @since 0.1.0
 */
import { FileSystem } from "@effect/platform"
import type { PlatformError } from "@effect/platform/Error"
import { Data, Effect, Either, Option, Schema, Stream } from "effect"
import { type AgentTask, decodeLine, InvalidTask } from "../agent/AgentTask.js"
import { Stdio } from "./Stdio.js"

/**
 * The input could not be read: a missing file, a directory, no permission, a broken pipe.
 *
 * @since 0.1.0
 * @category errors
 */
export class InputUnreadable extends Schema.TaggedError<InputUnreadable>()("InputUnreadable", {
  /** The path given, `-` for stdin. */
  path: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `cannot read input ${this.path === "-" ? "from stdin" : `"${this.path}"`}: ${this.reason}`
  }
}

/**
 * What an earlier run already wrote: the ids of its task records and the line numbers of its
 * invalid-line records. Entries matching them are `Resumed` instead of run or written again.
 *
 * @since 0.1.0
 * @category models
 */
export interface ResumeSet {
  readonly ids: ReadonlySet<string>
  readonly lines: ReadonlySet<number>
}

/**
 * Nothing done yet.
 *
 * @since 0.1.0
 * @category constructors
 */
export const emptyResumeSet: ResumeSet = { ids: new Set(), lines: new Set() }

/**
 * One non-blank input line, classified.
 *
 * @since 0.1.0
 * @category models
 */
export type Entry = Data.TaggedEnum<{
  /** A valid task to run. */
  Task: { readonly line: number; readonly task: AgentTask }
  /** A line that is not a valid task; `error.line` is its number. */
  Invalid: { readonly error: InvalidTask }
  /** A line an earlier run already has a record for. */
  Resumed: { readonly line: number }
}>

/**
 * Constructors and matchers for {@link Entry}.
 *
 * @since 0.1.0
 * @category constructors
 */
export const Entry = Data.taggedEnum<Entry>()

/**
 * An I/O error as the CLI words it: the system's reason and description when it has them.
 *
 * @since 0.1.0
 * @category errors
 */
export const reasonOf = (error: PlatformError): string =>
  error._tag === "SystemError" && error.description !== undefined
    ? `${error.reason}: ${error.description}`
    : error.message

const bytes = (input: string): Stream.Stream<Uint8Array, PlatformError, FileSystem.FileSystem | Stdio> =>
  input === "-"
    ? Stream.unwrap(Effect.map(Stdio, (stdio) => stdio.stdin))
    : Stream.unwrap(Effect.map(FileSystem.FileSystem, (fs) => fs.stream(input)))

/**
 * The text lines of the input, `-` for stdin. A file that cannot be opened or read fails the
 * stream with {@link InputUnreadable} naming the path.
 *
 * @since 0.1.0
 * @category constructors
 */
export const lines = (input: string): Stream.Stream<string, InputUnreadable, FileSystem.FileSystem | Stdio> =>
  bytes(input).pipe(
    Stream.decodeText(),
    Stream.splitLines,
    Stream.mapError((error) => new InputUnreadable({ path: input, reason: reasonOf(error) }))
  )

const isBlank = (text: string): boolean => text.trim().length === 0

/**
 * The number of non-blank lines of the input, read as a stream.
 *
 * @since 0.1.0
 * @category constructors
 */
export const count = (input: string): Effect.Effect<number, InputUnreadable, FileSystem.FileSystem | Stdio> =>
  lines(input).pipe(Stream.runFold(0, (n, text) => (isBlank(text) ? n : n + 1)))

/**
 * The `total` of the progress line: the non-blank lines of a regular file, counted up front
 * (one extra streaming read); none for stdin, a pipe or a device, which must not be read twice.
 * A missing path or a directory fails here, before any work starts.
 *
 * @since 0.1.0
 * @category constructors
 */
export const total = (
  input: string
): Effect.Effect<Option.Option<number>, InputUnreadable, FileSystem.FileSystem | Stdio> => {
  if (input === "-") return Effect.succeed(Option.none())
  return Effect.flatMap(FileSystem.FileSystem, (fs) => fs.stat(input)).pipe(
    Effect.mapError((error) => new InputUnreadable({ path: input, reason: reasonOf(error) })),
    Effect.flatMap((info) => {
      switch (info.type) {
        case "File":
          return Effect.map(count(input), Option.some)
        case "Directory":
          return Effect.fail(new InputUnreadable({ path: input, reason: "is a directory" }))
        default:
          return Effect.succeed(Option.none())
      }
    })
  )
}

/**
 * Number, parse and classify lines: blank lines are dropped (their numbers still count), a
 * line whose id appeared on an earlier valid line is `Invalid`, and a line the `resume` set
 * already covers is `Resumed`. State lives in the stream, so each run of it starts afresh.
 *
 * @since 0.1.0
 * @category constructors
 */
export const entries = <E, R>(
  input: Stream.Stream<string, E, R>,
  resume: ResumeSet = emptyResumeSet
): Stream.Stream<Entry, E, R> =>
  Stream.suspend(() => {
    const firstLine = new Map<string, number>()
    let line = 0
    const classify = (text: string): Entry => {
      const parsed = decodeLine(text, line)
      if (Either.isLeft(parsed)) {
        return resume.lines.has(line) ? Entry.Resumed({ line }) : Entry.Invalid({ error: parsed.left })
      }
      const task = parsed.right
      const first = firstLine.get(task.id)
      if (first !== undefined) {
        return resume.lines.has(line)
          ? Entry.Resumed({ line })
          : Entry.Invalid({ error: new InvalidTask({ line, reason: `duplicate id "${task.id}" (first on line ${first})` }) })
      }
      firstLine.set(task.id, line)
      return resume.ids.has(task.id) ? Entry.Resumed({ line }) : Entry.Task({ line, task })
    }
    return Stream.filterMap(input, (text) => {
      line++
      return isBlank(text) ? Option.none() : Option.some(classify(text))
    })
  })

/**
 * The classified entries of the input, `-` for stdin.
 *
 * @since 0.1.0
 * @category constructors
 */
export const read = (
  input: string,
  resume: ResumeSet = emptyResumeSet
): Stream.Stream<Entry, InputUnreadable, FileSystem.FileSystem | Stdio> => entries(lines(input), resume)
