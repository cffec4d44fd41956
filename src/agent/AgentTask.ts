/**
 * An agent task and the record of what became of it. Tasks arrive as JSON Lines; every line
 * gets exactly one record: `succeeded`, `failed` (with the typed error that ended it) or
 * `invalid` (with the line number and what was wrong), so nothing is dropped and nothing is
 * disguised (seed bug 1: `safeProcessTask` returned `null` and lost the error).
 *
 * @example
 * ```ts
 * import { Either } from "effect"
 * import { AgentTask } from "wiz-effect"
 *
 * const parsed = AgentTask.decodeLine('{"id":"t1","prompt":"Summarise: ..."}', 1)
 * if (Either.isLeft(parsed)) console.error(parsed.left.message) // "line 1: ..."
 * ```
 *
 * @since 0.1.0
 */
import { Either, ParseResult, Schema } from "effect"

/**
 * One unit of work: a prompt for the model, named by a unique `id`.
 *
 * @since 0.1.0
 * @category models
 */
export class AgentTask extends Schema.Class<AgentTask>("AgentTask")({
  id: Schema.String.pipe(Schema.minLength(1, { message: () => "id must not be empty" })),
  prompt: Schema.String.pipe(Schema.minLength(1, { message: () => "prompt must not be empty" })),
  maxTokens: Schema.optional(Schema.Int.pipe(Schema.positive()))
}) {}

/**
 * The error of a record, as written to JSON: its tag and a sentence.
 *
 * @since 0.1.0
 * @category models
 */
export const ErrorInfo = Schema.Struct({
  _tag: Schema.String,
  message: Schema.String
})

/**
 * @since 0.1.0
 * @category models
 */
export type ErrorInfo = typeof ErrorInfo.Type

/**
 * The tag and message of any error, for a record.
 *
 * @since 0.1.0
 * @category constructors
 */
export const errorInfo = (error: { readonly _tag: string; readonly message: string }): ErrorInfo => ({
  _tag: error._tag,
  message: error.message
})

/**
 * A task the model answered. `degraded` is true when a fallback tier answered instead of the
 * primary model; `model` names the one that did. `attempts` counts calls that reached a model
 * (retries and hedged copies included; an attempt an open breaker refused is no call).
 *
 * @since 0.1.0
 * @category models
 */
export class TaskSucceeded extends Schema.Class<TaskSucceeded>("TaskSucceeded")({
  id: Schema.String,
  status: Schema.tag("succeeded"),
  output: Schema.String,
  attempts: Schema.Int,
  model: Schema.String,
  degraded: Schema.Boolean,
  durationMs: Schema.Number
}) {}

/**
 * A task that could not be answered, with the error that ended it and the calls that reached a
 * model (`attempts`: 0 when an open breaker refused every attempt, and the error says so).
 *
 * @since 0.1.0
 * @category errors
 */
export class TaskFailed extends Schema.TaggedError<TaskFailed>()("TaskFailed", {
  id: Schema.String,
  status: Schema.tag("failed"),
  error: ErrorInfo,
  attempts: Schema.Int,
  durationMs: Schema.Number
}) {
  override get message(): string {
    return `task ${this.id} failed after ${this.attempts} attempt(s): ${this.error._tag}: ${this.error.message}`
  }
}

/**
 * An input line that is not a valid task: not JSON, a missing or wrong-typed field, or an id
 * seen before. `line` is 1-based.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidTask extends Schema.TaggedError<InvalidTask>()("InvalidTask", {
  line: Schema.Int,
  reason: Schema.String
}) {
  override get message(): string {
    return `line ${this.line}: ${this.reason}`
  }
}

/**
 * The record of an input line that is not a valid task.
 *
 * @since 0.1.0
 * @category models
 */
export class TaskInvalid extends Schema.Class<TaskInvalid>("TaskInvalid")({
  line: Schema.Int,
  status: Schema.tag("invalid"),
  error: ErrorInfo
}) {}

/**
 * The outcome of one task.
 *
 * @since 0.1.0
 * @category models
 */
export const TaskResult = Schema.Union(TaskSucceeded, TaskFailed)

/**
 * @since 0.1.0
 * @category models
 */
export type TaskResult = typeof TaskResult.Type

/**
 * One output line: the outcome of a task, or why its line was not a task.
 *
 * @since 0.1.0
 * @category models
 */
export const TaskRecord = Schema.Union(TaskSucceeded, TaskFailed, TaskInvalid)

/**
 * @since 0.1.0
 * @category models
 */
export type TaskRecord = typeof TaskRecord.Type

const decodeTask = Schema.decodeUnknownEither(AgentTask, { onExcessProperty: "ignore", errors: "all" })

// One message per field: an optional field's union would otherwise also report
// "Expected undefined" for the same value.
const describeIssues = (error: ParseResult.ParseError): string => {
  const byPath = new Map<string, string>()
  for (const issue of ParseResult.ArrayFormatter.formatErrorSync(error)) {
    const path = issue.path.join(".")
    if (!byPath.has(path)) byPath.set(path, path === "" ? issue.message : `${path}: ${issue.message}`)
  }
  return [...byPath.values()].join("; ")
}

/**
 * Parse one JSON Lines line (1-based `line`) into a task, or say what is wrong with it and where.
 *
 * @since 0.1.0
 * @category decoding
 */
export const decodeLine = (text: string, line: number): Either.Either<AgentTask, InvalidTask> => {
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (cause) {
    return Either.left(new InvalidTask({ line, reason: `not valid JSON (${(cause as Error).message})` }))
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    const got = JSON.stringify(json)
    return Either.left(new InvalidTask({ line, reason: `expected an object like {"id": "...", "prompt": "..."}, got ${got}` }))
  }
  return Either.mapLeft(decodeTask(json), (error) => new InvalidTask({ line, reason: describeIssues(error) }))
}

/**
 * The record to write for any outcome.
 *
 * @since 0.1.0
 * @category encoding
 */
export const encodeRecord = (record: TaskRecord): RecordJson => {
  const encoded = encodeTaskRecord(record)
  if (encoded.status !== "failed") return encoded
  // A failed task is an error in Effect (tagged, to be caught by tag); its record is data,
  // shaped like the others, without the tag.
  const { _tag: _, ...data } = encoded
  return data
}

const encodeTaskRecord = Schema.encodeSync(TaskRecord)

/**
 * A record as written to JSON.
 *
 * @since 0.1.0
 * @category encoding
 */
export type RecordJson =
  | typeof TaskSucceeded.Encoded
  | Omit<typeof TaskFailed.Encoded, "_tag">
  | typeof TaskInvalid.Encoded
