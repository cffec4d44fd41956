/**
 * `wiz run`: run a JSON Lines file of agent tasks through `AgentService` and write one JSON
 * record per input line, as each task finishes (the CLI contract in DESIGN.md):
 *
 * - a valid task gets `succeeded` or `failed`; a line that is not a valid task (bad JSON, a
 *   missing or wrong-typed field, an id seen on an earlier line) gets `invalid` with its line
 *   number and what was wrong; blank lines are skipped. Bad input never stops the run.
 * - the input (a file, `-`, a pipe, a FIFO) is opened before the output is touched, then
 *   streamed once, never read whole; the progress line's total is estimated from a regular
 *   file's size until the end is reached.
 * - the output is never the input (a usage error, checked before either is opened); `--resume`
 *   appends to `--output`, skipping the tasks and invalid lines it already records, and
 *   `--retry-failed` also runs the failed tasks again, rewriting the file safely (`OutputFile`).
 * - progress (redrawn on a terminal, plain lines otherwise) and the final summary go to stderr.
 *   The summary counts only records really written, and is printed however the run ends: a
 *   write error (a closed pipe, a full disk) fails the run after it, and an interruption
 *   (SIGINT, SIGTERM) adds the command that continues the run.
 * - `--model openai-compatible --base-url URL --model-name NAME [--api-key-env VAR]` runs the
 *   tasks against a real OpenAI-compatible API (OpenAI, Ollama, llama.cpp, vLLM, ...); the key
 *   is read from the environment variable VAR, never from a flag.
 * - `--outage-after` with `--outage-for` make the embedded model unreachable for a while, and
 *   `--breaker-open` sets how long the circuit breaker then stays open: together they show the
 *   breaker open, half-open and close again, with the refused tasks retried after it.
 *
 * Exit code 0 when every line was processed, even if some tasks failed; a usage error or an
 * unreadable input or output fails with a typed error instead.
 *
 * @example
 * ```ts
 * import { Effect, Option } from "effect"
 * import * as RunCommand from "wiz-effect/cli/RunCommand"
 *
 * // what `wiz run tasks.jsonl --output out.jsonl --failure-rate 0.05` does
 * const summary = RunCommand.run({ ...RunCommand.defaults, input: "tasks.jsonl", output: Option.some("out.jsonl"), failureRate: 0.05 })
 * ```
 *
 * @since 0.1.0
 */
import { Args, Command, Options } from "@effect/cli"
import { FetchHttpClient } from "@effect/platform"
import { Cause, Clock, Config, Duration, Effect, Exit, Fiber, Layer, Option, Redacted, Schema, Stream } from "effect"
import type { Scope } from "effect"
import * as AgentService from "../agent/AgentService.js"
import { TaskInvalid, type TaskRecord } from "../agent/AgentTask.js"
import * as ErrorInfo from "../events/ErrorInfo.js"
import type { AgentEvent } from "../events/AgentEvent.js"
import type * as AiModel from "../model/AiModel.js"
import * as EmbeddedModel from "../model/EmbeddedModel.js"
import * as OpenAiCompatible from "../model/OpenAiCompatible.js"
import * as CircuitBreaker from "../policy/CircuitBreaker.js"
import * as Retry from "../policy/Retry.js"
import * as OptionValue from "./OptionValue.js"
import * as OutputFile from "./OutputFile.js"
import * as Progress from "./Progress.js"
import * as RecordSink from "./RecordSink.js"
import { Stdio } from "./Stdio.js"
import * as Summary from "./Summary.js"
import * as TaskSource from "./TaskSource.js"

/**
 * The command line asked for something that cannot be done (`--resume` without `--output`, a
 * model that is not available).
 *
 * @since 0.1.0
 * @category errors
 */
export class UsageError extends Schema.TaggedError<UsageError>()("UsageError", {
  reason: Schema.String
}) {
  override get message(): string {
    return this.reason
  }
}

/**
 * The models `--model` names.
 *
 * @since 0.1.0
 * @category models
 */
export type Model = "embedded" | "openai-compatible"

/**
 * The parsed options of `wiz run`.
 *
 * @since 0.1.0
 * @category models
 */
export interface RunOptions {
  /** A JSON Lines file of tasks, or `-` for stdin. */
  readonly input: string
  /** The records file; none for stdout. */
  readonly output: Option.Option<string>
  /** Model calls at once; tasks asleep in a backoff or on an open circuit make room for more. */
  readonly concurrency: number
  /** Retries after the first attempt. */
  readonly retries: number
  /** Time one attempt may take. */
  readonly timeout: Duration.Duration
  /** Time one task may take in all: calls, backoffs, Retry-After waits and open circuits. */
  readonly deadline: Duration.Duration
  readonly model: Model
  /** OpenAI-compatible model: the API's base URL, up to `/chat/completions`. */
  readonly baseUrl: Option.Option<string>
  /** OpenAI-compatible model: the model to ask for. */
  readonly modelName?: Option.Option<string>
  /** OpenAI-compatible model: the environment variable holding the API key; none for no key. */
  readonly apiKeyEnv: Option.Option<string>
  /** Embedded model: probability that a call fails. */
  readonly failureRate: number
  /** Embedded model: seed of its draws; none for a random one. */
  readonly seed: Option.Option<number>
  /** Embedded model: time before the first token. */
  readonly timeToFirstToken: Option.Option<Duration.Duration>
  /** Embedded model: time per completion token. */
  readonly perToken: Option.Option<Duration.Duration>
  /** Embedded model: when a simulated outage starts, from the start of the run (with `outageFor`). */
  readonly outageAfter: Option.Option<Duration.Duration>
  /** Embedded model: how long the simulated outage lasts (with `outageAfter`). */
  readonly outageFor: Option.Option<Duration.Duration>
  /** How long the circuit breaker stays open; none for `CircuitBreaker.defaults.openDuration`. */
  readonly breakerOpen: Option.Option<Duration.Duration>
  /** Append to `output`, skipping what it already records. */
  readonly resume: boolean
  /** Like `resume`, and run again the tasks whose record says they failed (rewriting `output`). */
  readonly retryFailed: boolean
  /** Draw the progress line on stderr. */
  readonly progress: boolean
}

/**
 * `output` stdout, `concurrency`, `timeout` and `deadline` per `AgentService.defaults`, `retries` one
 * less than `Retry.defaults.maxAttempts`, the embedded model with its own defaults and no
 * outage, the breaker per `CircuitBreaker.defaults`, progress on.
 *
 * @since 0.1.0
 * @category defaults
 */
export const defaults: Omit<RunOptions, "input"> = {
  output: Option.none(),
  concurrency: AgentService.defaults.concurrency,
  retries: Retry.defaults.maxAttempts - 1,
  timeout: AgentService.defaults.timeout,
  deadline: AgentService.defaults.deadline,
  model: "embedded",
  baseUrl: Option.none(),
  modelName: Option.none(),
  apiKeyEnv: Option.none(),
  failureRate: EmbeddedModel.defaults.failureRate,
  seed: Option.none(),
  timeToFirstToken: Option.none(),
  perToken: Option.none(),
  outageAfter: Option.none(),
  outageFor: Option.none(),
  breakerOpen: Option.none(),
  resume: false,
  retryFailed: false,
  progress: true
}

const usage = (reason: string) => new UsageError({ reason })

/**
 * The OpenAI-compatible model on the runtime's `fetch` (Node's own undici, with keep-alive), so
 * the bundled `wiz` carries no HTTP client of its own.
 */
const httpModelLayer = (
  options: { readonly baseUrl: string; readonly model: string; readonly apiKey: Redacted.Redacted<string> | undefined }
) =>
  OpenAiCompatible.layer({ baseUrl: options.baseUrl, model: options.model, apiKey: options.apiKey }).pipe(
    Layer.provide(FetchHttpClient.layer),
    Layer.catchAll((error) => Layer.fail(usage(`--model openai-compatible: ${error.message}`)))
  )

/**
 * The OpenAI-compatible model the options name, its key read from the environment variable
 * `--api-key-env` names (a key is never a flag: flags end up in shell history and `ps`).
 */
const httpModel = Effect.fnUntraced(function*(options: RunOptions, modelName: Option.Option<string>) {
  if (Option.isNone(options.baseUrl) || Option.isNone(modelName)) {
    return yield* usage("--model openai-compatible needs --base-url URL and --model-name NAME (and --api-key-env VAR if the API wants a key)")
  }
  const keyVariable = Option.getOrUndefined(options.apiKeyEnv)
  const apiKey = keyVariable === undefined ? undefined : yield* Config.redacted(keyVariable).pipe(
    Effect.filterOrFail((key) => Redacted.value(key).trim() !== "", () => undefined),
    Effect.mapError(() => usage(`--api-key-env ${keyVariable}: that environment variable is not set`))
  )
  return httpModelLayer({ baseUrl: options.baseUrl.value, model: modelName.value, apiKey })
})

/** The agent over the embedded model (or `model`), as the options configure them. */
const agentLayer = (
  options: RunOptions,
  model: Layer.Layer<AiModel.AiModel, UsageError> = embeddedLayer(options)
): Layer.Layer<AgentService.AgentService, UsageError> =>
  AgentService.layer({
    concurrency: options.concurrency,
    timeout: options.timeout,
    deadline: options.deadline,
    retry: options.retries === 0 ? false : { maxAttempts: options.retries + 1 },
    ...Option.match(options.breakerOpen, {
      onNone: () => ({}),
      onSome: (openDuration) => ({ breaker: { openDuration } })
    })
  }).pipe(Layer.provide(model))

const embeddedLayer = (options: RunOptions): Layer.Layer<AiModel.AiModel> =>
  EmbeddedModel.layer({
    failureRate: options.failureRate,
    ...Option.match(options.seed, { onNone: () => ({}), onSome: (seed) => ({ seed }) }),
    ...Option.match(options.timeToFirstToken, { onNone: () => ({}), onSome: (timeToFirstToken) => ({ timeToFirstToken }) }),
    ...Option.match(options.perToken, { onNone: () => ({}), onSome: (perToken) => ({ perToken }) }),
    ...Option.match(Option.all({ after: options.outageAfter, lasting: options.outageFor }), {
      onNone: () => ({}),
      onSome: (outage) => ({ outage })
    })
  })

/**
 * Feed the agent's events into the statistics from now on. The returned `settle(finished)`
 * waits until the events of `finished` tasks have all been counted (each task's events come
 * before its `TaskFinished`), then stops.
 */
const countEvents = (
  events: Stream.Stream<AgentEvent>,
  stats: Summary.Stats
): Effect.Effect<(finished: number) => Effect.Effect<void>, never, Scope.Scope> =>
  Effect.gen(function*() {
    let seen = 0
    let expected = Number.POSITIVE_INFINITY
    const fiber = yield* Stream.runForEachWhile(events, (event) =>
      Effect.zipRight(
        stats.recordEvent(event),
        Effect.sync(() => {
          if (event._tag === "TaskFinished") seen++
          return seen < expected
        })
      )).pipe(Effect.forkScoped)
    return (finished) =>
      Effect.suspend(() => {
        expected = finished
        return seen >= finished ? Fiber.interrupt(fiber) : Fiber.join(fiber)
      })
  })

/**
 * Run the tasks of `options.input` and return the summary (also written to stderr).
 *
 * @since 0.1.0
 * @category handlers
 */
export const run = Effect.fn("RunCommand.run")(function*(options: RunOptions) {
  const modelName = options.modelName ?? Option.none()
  if (options.model === "embedded" && (Option.isSome(options.baseUrl) || Option.isSome(options.apiKeyEnv))) {
    return yield* usage("--base-url and --api-key-env apply only to --model openai-compatible")
  }
  if (options.model === "embedded" && Option.isSome(modelName)) {
    return yield* usage("--model-name applies only to --model openai-compatible")
  }
  const model = options.model === "embedded" ? agentLayer(options) : agentLayer(options, yield* httpModel(options, modelName))
  if (Option.isSome(options.outageAfter) !== Option.isSome(options.outageFor)) {
    return yield* usage("--outage-after and --outage-for go together: when the simulated outage starts and how long it lasts")
  }
  if ((options.resume || options.retryFailed) && Option.isNone(options.output)) {
    return yield* usage(
      `${options.retryFailed ? "--retry-failed" : "--resume"} needs --output FILE: it skips the tasks that file already records`
    )
  }
  if (yield* OutputFile.isInput(options.input, options.output)) {
    const output = Option.match(options.output, { onNone: () => "standard output", onSome: (path) => `the output "${path}"` })
    return yield* usage(
      `${output} is the input ${options.input === "-" ? "(stdin)" : `"${options.input}"`}, one file: ` +
        "writing the records would destroy the tasks; write them to another file"
    )
  }
  const stdio = yield* Stdio
  const stats = yield* Summary.makeStats
  const startedAt = yield* Clock.currentTimeMillis
  // once the input and the output are open, a summary is printed however the run ends
  let started = false
  let summary: Summary.Summary | undefined
  const finish = (exit: Exit.Exit<unknown, unknown>) =>
    Effect.gen(function*() {
      if (!started) return
      summary = yield* stats.summary((yield* Clock.currentTimeMillis) - startedAt)
      const interrupted = Exit.isFailure(exit) && Cause.isInterruptedOnly(exit.cause)
      yield* stdio.stderr(Summary.render(summary) + (interrupted ? howToContinue(options) : ""))
    })

  yield* Effect.gen(function*() {
    const input = yield* TaskSource.open(options.input)
    const { existing, output } = yield* openOutput(options)
    started = true
    const resume: TaskSource.ResumeSet = {
      ids: options.retryFailed ? new Set([...existing.ids].filter((id) => !existing.failed.has(id))) : existing.ids,
      lines: existing.lines
    }
    const agent = yield* AgentService.AgentService
    const settleEvents = yield* countEvents(yield* agent.subscribe, stats)
    // what the output already answers is no work left: those lines not reached yet are left
    // out of the ETA (an estimate: the output may answer ids the input no longer has)
    let allRead = false
    const answeredAhead = Effect.map(stats.skipped, (skipped) =>
      allRead ? 0 : Math.max(0, resume.ids.size + resume.lines.size - skipped))
    const line = options.progress
      ? yield* Progress.start(stats.counts, { mode: stdio.stderrIsTTY ? "tty" : "plain", total: input.total, answeredAhead })
      : Progress.none
    // records on the terminal the progress line is drawn on go above it, never into it
    const onScreen = Option.isNone(options.output) && stdio.stdoutIsTTY
    const write = (record: TaskRecord, count: Effect.Effect<void>) =>
      Effect.uninterruptible(Effect.zipRight(onScreen ? line.above(output.sink.write(record)) : output.sink.write(record), count))
    const tasks = TaskSource.entries(input.lines, resume).pipe(
      Stream.tap(TaskSource.Entry.$match({
        Task: () => Effect.void,
        Invalid: ({ error }) => write(new TaskInvalid({ line: error.line, error: ErrorInfo.fromError(error) }), stats.recordInvalid),
        Resumed: () => stats.recordSkipped
      })),
      Stream.filterMap((entry) => (entry._tag === "Task" ? Option.some(entry.task) : Option.none())),
      Stream.onEnd(Effect.sync(() => (allRead = true)))
    )
    const finished = yield* agent.processAll(tasks).pipe(
      Stream.runFoldEffect(0, (n, result) => Effect.as(write(result, stats.recordResult(result)), n + 1))
    )
    yield* settleEvents(finished)
    yield* output.commit
  }).pipe(Effect.scoped, Effect.provide(model), Effect.onExit(finish))
  return summary!
})

const shellWord = (word: string): string => (/^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replaceAll("'", "'\\''")}'`)

/** What to type to pick an interrupted run up where it stopped. */
const howToContinue = (options: RunOptions): string => {
  const again = options.retryFailed ? "--retry-failed" : "--resume"
  const input = options.input === "-" ? "- (with the same tasks on stdin)" : shellWord(options.input)
  return Option.match(options.output, {
    onNone: () =>
      "wiz: interrupted; the records so far went to stdout. To continue, keep them in a file and run:\n" +
      `  wiz run ${input} --output FILE --resume\n`,
    onSome: (output) =>
      `wiz: interrupted; what is done is in ${shellWord(output)}. To continue, run:\n` +
      `  wiz run ${input} --output ${shellWord(output)} ${again}\n`
  })
}

/**
 * The output, opened as the options say, and what it already recorded; a torn last line is
 * reported before it is cut off.
 */
const openOutput = (options: RunOptions) =>
  Effect.gen(function*() {
    if (Option.isNone(options.output)) {
      return { existing: OutputFile.none, output: { sink: yield* RecordSink.stdout, commit: Effect.void } }
    }
    const path = options.output.value
    const keeps = options.resume || options.retryFailed
    const existing = keeps ? yield* OutputFile.scan(path) : OutputFile.none
    if (Option.isSome(existing.torn)) {
      const { bytes, line } = existing.torn.value
      yield* Effect.flatMap(Stdio, (stdio) =>
        stdio.stderr(
          `wiz: the last line of "${path}" (line ${line}, ${bytes} bytes) is a record cut short by a crash; ` +
            "it is cut off and its task runs again\n"
        ))
    }
    const mode = options.retryFailed ? "rewrite" : keeps ? "append" : "truncate"
    return { existing, output: yield* OutputFile.open(path, mode, existing) }
  })

// -----------------------------------------------------------------------------
// command line
// -----------------------------------------------------------------------------

/**
 * The options of `wiz run` that take no value. The command line needs their names to tell
 * `wiz run - --resume` (stdin, then a flag) from `wiz run -o - ...`.
 *
 * @since 0.1.0
 * @category commands
 */
export const flags: ReadonlyArray<string> = []

/** A boolean option, listed in {@link flags} as it is defined. */
const flag = (name: string, description: string) => {
  ;(flags as Array<string>).push(`--${name}`)
  return Options.boolean(name).pipe(Options.withDescription(description))
}

const runOptions = {
  input: Args.text({ name: "input" }).pipe(
    Args.withDescription(
      "JSON Lines of tasks, one {\"id\", \"prompt\", \"maxTokens\"?} per line: a file, a pipe " +
        "(<(...), /dev/stdin, a FIFO), or - or nothing for stdin. Blank lines are skipped; every other line gets exactly one output record."
    ),
    Args.withDefault("-")
  ),
  output: Options.text("output").pipe(
    Options.withAlias("o"),
    Options.withPseudoName("FILE"),
    Options.withDescription("Write the records to FILE (truncated unless --resume) instead of stdout."),
    Options.optional
  ),
  concurrency: OptionValue.integer("concurrency", 1).pipe(
    Options.withDescription(
      `Model calls at once; a task asleep in a backoff or waiting on an open circuit makes room for the next (default ${defaults.concurrency}).`
    ),
    Options.withDefault(defaults.concurrency)
  ),
  retries: OptionValue.integer("retries", 0).pipe(
    Options.withDescription(`Retries of a failed attempt, after the first attempt (default ${defaults.retries}).`),
    Options.withDefault(defaults.retries)
  ),
  timeout: OptionValue.duration(
    "timeout",
    "positive",
    `Time one attempt may take, e.g. 10s or 500ms (default ${Duration.format(defaults.timeout)}).`
  ),
  deadline: OptionValue.duration(
    "deadline",
    "positive",
    `Time one task may take in all — calls, backoffs, Retry-After waits, an open circuit — before it fails ` +
      `with DeadlineExceeded saying what it waited for (default ${Duration.format(defaults.deadline)}).`
  ),
  model: Options.choice("model", ["embedded", "openai-compatible"]).pipe(
    Options.withDescription(
      "The model: the embedded simulator (default), or an OpenAI-compatible HTTP API (OpenAI, Ollama, llama.cpp, vLLM, ...; " +
        "with --base-url and --model-name)."
    ),
    Options.withDefault(defaults.model)
  ),
  baseUrl: Options.text("base-url").pipe(
    Options.withPseudoName("URL"),
    Options.withDescription(
      "Base URL of the OpenAI-compatible API, up to /chat/completions: https://api.openai.com/v1, http://localhost:11434/v1 " +
        "(--model openai-compatible only)."
    ),
    Options.optional
  ),
  modelName: Options.text("model-name").pipe(
    Options.withPseudoName("NAME"),
    Options.withDescription("The model the API is asked for: gpt-4o-mini, llama3.2 (--model openai-compatible only)."),
    Options.optional
  ),
  apiKeyEnv: Options.text("api-key-env").pipe(
    Options.withPseudoName("NAME"),
    Options.withDescription(
      "Environment variable holding the API key, e.g. OPENAI_API_KEY; the key itself is never a flag " +
        "(--model openai-compatible only; none for a local server)."
    ),
    Options.optional
  ),
  failureRate: OptionValue.number("failure-rate", 0, 1).pipe(
    Options.withDescription(
      `Embedded model: probability (0..1) that a call fails: a rate limit, an overload or a hang (default ${defaults.failureRate}).`
    ),
    Options.withDefault(defaults.failureRate)
  ),
  seed: OptionValue.integer("seed", Number.MIN_SAFE_INTEGER).pipe(
    Options.withDescription("Embedded model: seed of its draws, for a reproducible run."),
    Options.optional
  ),
  timeToFirstToken: OptionValue.duration(
    "time-to-first-token",
    "zero",
    `Embedded model: time before the first token (default ${Duration.format(EmbeddedModel.defaults.timeToFirstToken)}).`
  ),
  perToken: OptionValue.duration(
    "per-token",
    "zero",
    `Embedded model: time per completion token (default ${Duration.format(EmbeddedModel.defaults.perToken)}).`
  ),
  outageAfter: OptionValue.duration(
    "outage-after",
    "zero",
    "Embedded model: start a simulated outage this long after the run starts; every call fails at once " +
      "(Unavailable) until it ends. Needs --outage-for."
  ),
  outageFor: OptionValue.duration(
    "outage-for",
    "positive",
    "Embedded model: how long the simulated outage lasts. Needs --outage-after."
  ),
  breakerOpen: OptionValue.duration(
    "breaker-open",
    "positive",
    `How long the circuit breaker stays open before a probe call may test the model again ` +
      `(default ${Duration.format(CircuitBreaker.defaults.openDuration)}).`
  ),
  resume: flag(
    "resume",
    "Append to --output, skipping the tasks and invalid lines it already records (a last record cut short by a crash is cut off)."
  ),
  retryFailed: flag(
    "retry-failed",
    "Like --resume, and run again the tasks whose record says they failed: each task ends with exactly one record. " +
      "The file is rewritten beside the old one and renamed over it at the end; a crash midway leaves the old one."
  ),
  noProgress: flag("no-progress", "Do not draw the progress line on stderr.")
}

/**
 * The `run` subcommand.
 *
 * @since 0.1.0
 * @category commands
 */
export const command = Command.make("run", runOptions, ({ deadline, noProgress, timeout, ...rest }) =>
  Effect.asVoid(run({
    ...rest,
    timeout: Option.getOrElse(timeout, () => defaults.timeout),
    deadline: Option.getOrElse(deadline, () => defaults.deadline),
    progress: !noProgress
  }))).pipe(
    Command.withDescription(
      "Run a JSON Lines file of agent tasks and write one JSON record per input line as each finishes: " +
        "succeeded, failed, or invalid (with the line number and what was wrong). " +
        "Progress and a summary go to stderr."
    )
  )
