/**
 * The input of `wiz run`: JSON Lines read once, as a stream (never whole in memory, never
 * twice: a pipe cannot be read again), each line numbered and classified as a task to run, an
 * invalid line (with what was wrong), or a line a previous run already answered (`--resume`).
 * An id seen on an earlier line makes a later line invalid ("duplicate id "x" (first on line
 * 3)"), so every id names exactly one task. Blank lines are skipped but still counted, so line
 * numbers match an editor's.
 *
 * Any readable input works the same way: a file, `-` (stdin), `/dev/stdin`, a FIFO, a process
 * substitution `<(...)`; it is read front to back, never by position. Lines are split on bytes
 * and each is checked to be UTF-8: a line that is not is invalid, saying so, instead of being
 * decoded with replacement characters (which would make `"a\xff"` and `"a\xfe"` one id).
 * How many lines there are is known once the input has been read to its end; before that, for
 * a regular file, it is estimated from its size and the bytes read so far.
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
import type { PlatformError } from "@effect/platform/Error"
import * as NodeStream from "@effect/platform-node/NodeStream"
import { Data, Effect, Either, Option, Schema, Stream } from "effect"
import type { Scope } from "effect"
import { Buffer, isUtf8 } from "node:buffer"
import { open as openFile } from "node:fs/promises"
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

/**
 * A line whose bytes are not UTF-8: where the first bad byte is, and what it is.
 *
 * @since 0.1.0
 * @category models
 */
export class NotUtf8 extends Data.TaggedClass("NotUtf8")<{
  /** 0-based offset of the first byte that is not part of a valid UTF-8 sequence. */
  readonly offset: number
  readonly byte: number
}> {}

/**
 * One line of the input: its text, or why it has none.
 *
 * @since 0.1.0
 * @category models
 */
export type Line = string | NotUtf8

// Where a UTF-8 check failed (RFC 3629: no overlongs, no surrogates, nothing above U+10FFFF).
const firstInvalidByte = (bytes: Uint8Array): number => {
  let i = 0
  while (i < bytes.length) {
    const b = bytes[i]!
    const more = b < 0x80 ? 0 : b >= 0xc2 && b <= 0xdf ? 1 : b >= 0xe0 && b <= 0xef ? 2 : b >= 0xf0 && b <= 0xf4 ? 3 : -1
    if (more < 0) return i
    const low = b === 0xe0 ? 0xa0 : b === 0xf0 ? 0x90 : 0x80
    const high = b === 0xed ? 0x9f : b === 0xf4 ? 0x8f : 0xbf
    for (let k = 1; k <= more; k++) {
      const c = bytes[i + k]
      if (c === undefined || c < (k === 1 ? low : 0x80) || c > (k === 1 ? high : 0xbf)) return i
    }
    i += more + 1
  }
  return bytes.length
}

const decodeLineBytes = (bytes: Buffer, first: boolean): Line => {
  let end = bytes.length
  if (end > 0 && bytes[end - 1] === 0x0d) end--
  // a byte-order mark is dropped at the start of the input only
  const start = first && end >= 3 && bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf ? 3 : 0
  const line = bytes.subarray(start, end)
  if (isUtf8(line)) return line.toString("utf8")
  const offset = firstInvalidByte(line)
  return new NotUtf8({ offset: start + offset, byte: line[offset] ?? 0 })
}

/**
 * Split bytes into lines (`\n` or `\r\n`) and decode each one as UTF-8, strictly: a line
 * that is not UTF-8 becomes {@link NotUtf8}. A last line without a newline is a line.
 *
 * @since 0.1.0
 * @category constructors
 */
export const splitLines = <E, R>(bytes: Stream.Stream<Uint8Array, E, R>): Stream.Stream<Line, E, R> =>
  Stream.suspend(() => {
    let carry: Buffer = Buffer.alloc(0)
    let first = true
    const cut = (chunk: Uint8Array): Array<Line> => {
      const data = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength)
      const out: Array<Line> = []
      let from = 0
      let newline = data.indexOf(0x0a)
      while (newline !== -1) {
        const piece = data.subarray(from, newline)
        out.push(decodeLineBytes(carry.length > 0 ? Buffer.concat([carry, piece]) : piece, first))
        carry = Buffer.alloc(0)
        first = false
        from = newline + 1
        newline = data.indexOf(0x0a, from)
      }
      if (from < data.length) carry = Buffer.concat([carry, data.subarray(from)])
      return out
    }
    return Stream.concat(
      Stream.mapConcat(bytes, cut),
      Stream.suspend(() => (carry.length > 0 ? Stream.make(decodeLineBytes(carry, first)) : Stream.empty))
    )
  })

const isBlank = (line: Line): boolean => typeof line === "string" && line.trim().length === 0

/**
 * How many non-blank lines the input has: counted (it was read to its end, or every byte of a
 * regular file was), or estimated from the lines in the bytes read so far (`estimated`).
 *
 * @since 0.1.0
 * @category models
 */
export interface Total {
  readonly lines: number
  readonly estimated: boolean
}

/**
 * An opened input: its lines, to be run once, and how many there are as far as is known.
 *
 * @since 0.1.0
 * @category models
 */
export interface Input {
  /** The lines, read front to back; run it once. */
  readonly lines: Stream.Stream<Line, InputUnreadable>
  /**
   * The non-blank lines: exact once the input has been read to its end; before that estimated
   * from the size of a regular file and the bytes read, or unknown (a pipe, stdin).
   */
  readonly total: Effect.Effect<Option.Option<Total>>
}

const describe = (cause: unknown): string => (cause instanceof Error ? cause.message : String(cause))

/** Count what goes by, for {@link Input.total}. */
const counted = (bytes: Stream.Stream<Uint8Array, InputUnreadable>, size: Option.Option<number>): Input => {
  let read = 0
  let lines = 0
  let ended = false
  return {
    lines: bytes.pipe(
      Stream.tap((chunk) => Effect.sync(() => (read += chunk.byteLength))),
      splitLines,
      // per chunk, as it is read: the estimate compares lines and bytes read so far
      Stream.mapChunks((chunk) => {
        for (const line of chunk) if (!isBlank(line)) lines++
        return chunk
      }),
      Stream.onEnd(Effect.sync(() => (ended = true)))
    ),
    total: Effect.sync(() => {
      if (ended || Option.exists(size, (size) => read >= size)) return Option.some({ lines, estimated: false })
      if (Option.isNone(size) || read === 0) return Option.none()
      return Option.some({ lines: Math.max(lines, Math.round((lines * size.value) / read)), estimated: true })
    })
  }
}

const readingTerminal = "wiz: reading tasks from standard input, one JSON object per line " +
  "({\"id\": \"t1\", \"prompt\": \"...\"}); Ctrl-D ends them. To run a file: wiz run tasks.jsonl\n"

/**
 * Open the input, `-` for stdin, for the scope: a path that cannot be opened, or a directory,
 * fails here with {@link InputUnreadable}, before anything else is touched. Opening a FIFO waits
 * for its writer; stdin on a terminal is said on stderr to be read (a run waiting for typed
 * tasks would look hung).
 *
 * @since 0.1.0
 * @category constructors
 */
export const open = (input: string): Effect.Effect<Input, InputUnreadable, Stdio | Scope.Scope> => {
  const unreadable = (cause: unknown) => new InputUnreadable({ path: input, reason: describe(cause) })
  if (input === "-") {
    return Effect.gen(function*() {
      const stdio = yield* Stdio
      if (stdio.stdinIsTTY) yield* stdio.stderr(readingTerminal)
      return counted(Stream.mapError(stdio.stdin, (error) => new InputUnreadable({ path: input, reason: reasonOf(error) })), Option.none())
    })
  }
  return Effect.gen(function*() {
    const handle = yield* Effect.acquireRelease(
      Effect.tryPromise({ try: () => openFile(input, "r"), catch: unreadable }),
      (handle) => Effect.promise(() => handle.close())
    )
    const info = yield* Effect.tryPromise({ try: () => handle.stat(), catch: unreadable })
    if (info.isDirectory()) return yield* new InputUnreadable({ path: input, reason: "is a directory" })
    const bytes = NodeStream.fromReadable<InputUnreadable, Uint8Array>(
      () => handle.createReadStream({ autoClose: false }),
      unreadable
    )
    return counted(bytes, info.isFile() ? Option.some(info.size) : Option.none())
  })
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
  input: Stream.Stream<Line, E, R>,
  resume: ResumeSet = emptyResumeSet
): Stream.Stream<Entry, E, R> =>
  Stream.suspend(() => {
    const firstLine = new Map<string, number>()
    let line = 0
    const classify = (text: Line): Entry => {
      const parsed = typeof text === "string"
        ? decodeLine(text, line)
        : Either.left(
          new InvalidTask({
            line,
            reason: `not valid UTF-8 (byte 0x${text.byte.toString(16).padStart(2, "0")} at offset ${text.offset})`
          })
        )
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
