/**
 * `wiz run`: run a JSON Lines file of agent tasks through `AgentService` and write one JSON
 * record per input line, as each task finishes (the CLI contract in DESIGN.md):
 *
 * - a valid task gets `succeeded` or `failed`; a line that is not a valid task (bad JSON, a
 *   missing or wrong-typed field, an id seen on an earlier line) gets `invalid` with its line
 *   number and what was wrong; blank lines are skipped. Bad input never stops the run.
 * - the input is streamed, never read whole; when it is a regular file its non-blank lines are
 *   counted first so the progress line knows the total.
 * - `--resume` appends to `--output`, skipping the tasks and invalid lines it already records.
 * - progress (redrawn on a terminal, plain lines otherwise) and the final summary go to stderr.
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
import { Args, Command, HelpDoc, Options, ValidationError } from "@effect/cli"
import { NodeHttpClient } from "@effect/platform-node"
import { Clock, Config, Duration, Effect, Fiber, Layer, Option, Redacted, Schema, Stream } from "effect"
import type { Scope } from "effect"
import * as AgentService from "../agent/AgentService.js"
import { TaskInvalid } from "../agent/AgentTask.js"
import * as ErrorInfo from "../events/ErrorInfo.js"
import type { AgentEvent } from "../events/AgentEvent.js"
import type * as AiModel from "../model/AiModel.js"
import * as EmbeddedModel from "../model/EmbeddedModel.js"
import * as OpenAiCompatible from "../model/OpenAiCompatible.js"
import * as CircuitBreaker from "../policy/CircuitBreaker.js"
import * as Retry from "../policy/Retry.js"
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
  /** Tasks worked on at once. */
  readonly concurrency: number
  /** Retries after the first attempt. */
  readonly retries: number
  /** Time one attempt may take. */
  readonly timeout: Duration.Duration
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
  /** Draw the progress line on stderr. */
  readonly progress: boolean
}

/**
 * `output` stdout, `concurrency` and `timeout` per `AgentService.defaults`, `retries` one
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
  progress: true
}

const usage = (reason: string) => new UsageError({ reason })

/** The OpenAI-compatible model on Node's HTTP client (undici, keep-alive). */
const httpModelLayer = (
  options: { readonly baseUrl: string; readonly model: string; readonly apiKey: Redacted.Redacted<string> | undefined }
) =>
  OpenAiCompatible.layer({ baseUrl: options.baseUrl, model: options.model, apiKey: options.apiKey }).pipe(
    Layer.provide(NodeHttpClient.layerUndici),
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
  if (options.resume && Option.isNone(options.output)) {
    return yield* usage("--resume needs --output FILE: it skips the tasks that file already records")
  }
  const stdio = yield* Stdio
  const total = yield* TaskSource.total(options.input)
  const resumed = Option.isSome(options.output) && options.resume
    ? yield* RecordSink.readResumeSet(options.output.value)
    : { ...TaskSource.emptyResumeSet, unreadableLines: 0 }
  if (resumed.unreadableLines > 0) {
    yield* stdio.stderr(
      `wiz: ${resumed.unreadableLines} line(s) of the output are not records (cut short by a crash?); their tasks run again\n`
    )
  }
  const stats = yield* Summary.makeStats
  const startedAt = yield* Clock.currentTimeMillis

  yield* Effect.gen(function*() {
    const sink = yield* RecordSink.open(options.output, { append: options.resume })
    const agent = yield* AgentService.AgentService
    const settleEvents = yield* countEvents(yield* agent.subscribe, stats)
    if (options.progress) {
      yield* Progress.start(stats.counts, { mode: stdio.stderrIsTTY ? "tty" : "plain", total })
    }
    const tasks = TaskSource.read(options.input, resumed).pipe(
      Stream.tap(TaskSource.Entry.$match({
        Task: () => Effect.void,
        Invalid: ({ error }) =>
          Effect.zipRight(sink.write(new TaskInvalid({ line: error.line, error: ErrorInfo.fromError(error) })), stats.recordInvalid),
        Resumed: () => stats.recordSkipped
      })),
      Stream.filterMap((entry) => (entry._tag === "Task" ? Option.some(entry.task) : Option.none()))
    )
    const finished = yield* agent.processAll(tasks).pipe(
      Stream.runFoldEffect(0, (n, result) =>
        sink.write(result).pipe(
          Effect.zipRight(stats.recordResult(result)),
          Effect.as(n + 1)
        ))
    )
    yield* settleEvents(finished)
  }).pipe(Effect.scoped, Effect.provide(model))

  const summary = yield* stats.summary((yield* Clock.currentTimeMillis) - startedAt)
  yield* stdio.stderr(Summary.render(summary))
  return summary
})

// -----------------------------------------------------------------------------
// command line
// -----------------------------------------------------------------------------

const invalid = (message: string) => Effect.fail(ValidationError.invalidValue(HelpDoc.p(message)))

const atLeast = (name: string, min: number) => (n: number) =>
  n >= min ? Effect.succeed(n) : invalid(`--${name} must be at least ${min} (got ${n})`)

const duration = (name: string, min: "zero" | "positive") => (text: string) =>
  Option.match(Duration.decodeUnknown(text), {
    onNone: () => invalid(`--${name}: "${text}" is not a duration (write e.g. "10 seconds" or "500 millis")`),
    onSome: (d) => (min === "positive" && Duration.toMillis(d) <= 0 ? invalid(`--${name} must be longer than 0`) : Effect.succeed(d))
  })

const durationOption = (name: string, min: "zero" | "positive", description: string) =>
  Options.text(name).pipe(
    Options.withPseudoName("DURATION"),
    Options.withDescription(description),
    Options.mapEffect(duration(name, min)),
    Options.optional
  )

const runOptions = {
  input: Args.text({ name: "input" }).pipe(
    Args.withDescription(
      "JSON Lines of tasks, one {\"id\", \"prompt\", \"maxTokens\"?} per line; - or nothing reads stdin " +
        "(give options before -). Blank lines are skipped; every other line gets exactly one output record."
    ),
    Args.withDefault("-")
  ),
  output: Options.text("output").pipe(
    Options.withAlias("o"),
    Options.withPseudoName("FILE"),
    Options.withDescription("Write the records to FILE (truncated unless --resume) instead of stdout."),
    Options.optional
  ),
  concurrency: Options.integer("concurrency").pipe(
    Options.withDescription(`Tasks worked on at once (default ${defaults.concurrency}).`),
    Options.withDefault(defaults.concurrency),
    Options.mapEffect(atLeast("concurrency", 1))
  ),
  retries: Options.integer("retries").pipe(
    Options.withDescription(`Retries of a failed attempt, after the first attempt (default ${defaults.retries}).`),
    Options.withDefault(defaults.retries),
    Options.mapEffect(atLeast("retries", 0))
  ),
  timeout: durationOption(
    "timeout",
    "positive",
    `Time one attempt may take, e.g. "10 seconds" or "500 millis" (default ${Duration.format(defaults.timeout)}).`
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
  failureRate: Options.float("failure-rate").pipe(
    Options.withDescription(
      `Embedded model: probability (0..1) that a call fails: a rate limit, an overload or a hang (default ${defaults.failureRate}).`
    ),
    Options.withDefault(defaults.failureRate),
    Options.mapEffect((x) => (x >= 0 && x <= 1 ? Effect.succeed(x) : invalid(`--failure-rate must be between 0 and 1 (got ${x})`)))
  ),
  seed: Options.integer("seed").pipe(
    Options.withDescription("Embedded model: seed of its draws, for a reproducible run."),
    Options.optional
  ),
  timeToFirstToken: durationOption(
    "time-to-first-token",
    "zero",
    `Embedded model: time before the first token (default ${Duration.format(EmbeddedModel.defaults.timeToFirstToken)}).`
  ),
  perToken: durationOption(
    "per-token",
    "zero",
    `Embedded model: time per completion token (default ${Duration.format(EmbeddedModel.defaults.perToken)}).`
  ),
  outageAfter: durationOption(
    "outage-after",
    "zero",
    "Embedded model: start a simulated outage this long after the run starts; every call fails at once " +
      "(Unavailable) until it ends. Needs --outage-for."
  ),
  outageFor: durationOption(
    "outage-for",
    "positive",
    "Embedded model: how long the simulated outage lasts. Needs --outage-after."
  ),
  breakerOpen: durationOption(
    "breaker-open",
    "positive",
    `How long the circuit breaker stays open before a probe call may test the model again ` +
      `(default ${Duration.format(CircuitBreaker.defaults.openDuration)}).`
  ),
  resume: Options.boolean("resume").pipe(
    Options.withDescription("Append to --output, skipping the tasks and invalid lines it already records.")
  ),
  noProgress: Options.boolean("no-progress").pipe(
    Options.withDescription("Do not draw the progress line on stderr.")
  )
}

/**
 * The `run` subcommand.
 *
 * @since 0.1.0
 * @category commands
 */
export const command = Command.make("run", runOptions, ({ noProgress, timeout, ...rest }) =>
  Effect.asVoid(run({
    ...rest,
    timeout: Option.getOrElse(timeout, () => defaults.timeout),
    progress: !noProgress
  }))).pipe(
    Command.withDescription(
      "Run a JSON Lines file of agent tasks and write one JSON record per input line as each finishes: " +
        "succeeded, failed, or invalid (with the line number and what was wrong). " +
        "Progress and a summary go to stderr."
    )
  )
