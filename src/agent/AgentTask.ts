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
import { ErrorInfo } from "../events/ErrorInfo.js"
import * as AiModel from "../model/AiModel.js"
import { unsafeConstruct } from "../internal/unsafeConstruct.js"

/**
 * One unit of work: a prompt for the model, named by a unique `id`. A chat request (a gateway's)
 * also carries its `system` message, its `temperature` and its conversation turn by turn
 * (`messages`, ending with the user's; `prompt` then holds the same conversation written out,
 * which is what tokens, keys and models without turns read): they reach the model's
 * `CompletionRequest` as they are, never folded into the prompt's text.
 *
 * @since 0.1.0
 * @category models
 */
export class AgentTask extends Schema.Class<AgentTask>("AgentTask")({
  id: Schema.String.pipe(Schema.minLength(1, { message: () => "id must not be empty" })),
  prompt: Schema.String.pipe(Schema.minLength(1, { message: () => "prompt must not be empty" })),
  maxTokens: Schema.optional(Schema.Int.pipe(Schema.positive())),
  system: Schema.optional(Schema.String),
  temperature: Schema.optional(Schema.Number.pipe(Schema.between(0, 2))),
  messages: Schema.optional(Schema.Array(AiModel.Message))
}) {}

/**
 * The model request of a task: its prompt and `maxTokens` (`defaultMaxTokens` when it sets
 * none), and its `system`, `temperature` and `messages` when it has them.
 *
 * @since 0.1.0
 * @category constructors
 */
export const requestOf = (task: AgentTask, defaultMaxTokens: number): AiModel.CompletionRequest =>
  // The task was validated when it was decoded; don't validate its parts again per call.
  task.system === undefined && task.temperature === undefined && task.messages === undefined
    ? unsafeConstruct(AiModel.CompletionRequest, { prompt: task.prompt, maxTokens: task.maxTokens ?? defaultMaxTokens })
    : unsafeConstruct(AiModel.CompletionRequest, {
      prompt: task.prompt,
      maxTokens: task.maxTokens ?? defaultMaxTokens,
      ...(task.system === undefined ? {} : { system: task.system }),
      ...(task.temperature === undefined ? {} : { temperature: task.temperature }),
      ...(task.messages === undefined ? {} : { messages: task.messages })
    })

/**
 * How a task's answer was shared with identical tasks in flight (`AgentService`'s `coalesce`):
 * it `led` the call (the call was its own) or `joined` one; `callers` is how many tasks the
 * call served.
 *
 * @since 0.1.0
 * @category models
 */
export const Coalesced = Schema.Struct({
  role: Schema.Literal("led", "joined"),
  callers: Schema.Int
})

/**
 * @since 0.1.0
 * @category models
 */
export type Coalesced = typeof Coalesced.Type

/**
 * A task the model answered. `degraded` is true when a fallback tier answered instead of the
 * primary model; `model` names the one that did. `attempts` counts calls that reached a model
 * (retries and hedged copies included; an attempt an open breaker refused is no call; a task
 * that joined a shared call counts that call's, and `coalesced` says so; a memo hit makes none,
 * and `memoized` says so).
 *
 * @since 0.1.0
 * @category models
 */
export class TaskSucceeded extends Schema.TaggedClass<TaskSucceeded>()("TaskSucceeded", {
  id: Schema.String,
  status: Schema.tag("succeeded"),
  output: Schema.String,
  attempts: Schema.Int,
  model: Schema.String,
  degraded: Schema.Boolean,
  durationMs: Schema.Number,
  coalesced: Schema.optional(Coalesced),
  memoized: Schema.optional(Schema.Boolean),
  /** Time the task's attempts waited for a token budget, in milliseconds, when they waited. */
  budgetWaitMs: Schema.optional(Schema.Number),
  /** A durable batch ran the task again after a crash cut a run off (`DurableBatch`). */
  recovered: Schema.optional(Schema.Boolean)
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
  durationMs: Schema.Number,
  coalesced: Schema.optional(Coalesced),
  /** Time the task's attempts waited for a token budget, in milliseconds, when they waited. */
  budgetWaitMs: Schema.optional(Schema.Number),
  /** A durable batch ran the task again after a crash cut a run off (`DurableBatch`). */
  recovered: Schema.optional(Schema.Boolean)
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
export class TaskInvalid extends Schema.TaggedClass<TaskInvalid>()("TaskInvalid", {
  line: Schema.Int,
  status: Schema.tag("invalid"),
  error: ErrorInfo
}) {}

/**
 * The outcome of one task. Both variants carry a `_tag` (`TaskSucceeded`, `TaskFailed`), so
 * `Match.tag` and `Effect.catchTag` work on them; `status` says the same in a record's JSON.
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
 * The record to write for any outcome: the encoded record without its `_tag`. In Effect a
 * record is a tagged value (to match or catch by tag); on disk it is data, told apart by
 * `status`, as the CLI contract says.
 *
 * @since 0.1.0
 * @category encoding
 */
export const encodeRecord = (record: TaskRecord): RecordJson => {
  const { _tag: _, ...data } = encodeTaskRecord(record)
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
  | Omit<typeof TaskSucceeded.Encoded, "_tag">
  | Omit<typeof TaskFailed.Encoded, "_tag">
  | Omit<typeof TaskInvalid.Encoded, "_tag">
