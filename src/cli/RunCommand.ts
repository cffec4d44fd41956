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
 *   Neither adds answers from one model to an output whose answers came from another (a usage
 *   error naming both) unless `--allow-model-change` says to.
 * - progress and the final summary go to stderr. The progress line is the library's `Progress`
 *   (redrawn on a terminal, plain lines otherwise), fed from the entries read and the agent's
 *   events; the summary counts only records really written, and is printed however the run
 *   ends: a write error (a closed pipe, a full disk) fails the run after it, and an
 *   interruption (SIGINT, SIGTERM) adds the command that continues the run: the command as it
 *   was given (`Argv.Given`: every option, so the same model answers), with `--resume`.
 * - `--events FILE` writes every event the agent publishes as JSON Lines (`EventsFile`): read
 *   losslessly (a reader that falls behind makes the agent wait, it never drops one).
 * - `--coalesce` makes identical tasks in flight share one model call, and `--memo-ttl D`
 *   answers a repeated task from the memo within `D`; every task still gets its own record,
 *   and the summary says how many shared.
 * - the model and policy options (`ModelOptions`, shared with `wiz ask`): `--model
 *   openai-compatible --base-url URL --model-name NAME [--api-key-env VAR]` runs the tasks
 *   against a real OpenAI-compatible API (OpenAI, Ollama, llama.cpp, vLLM, ...); the key is
 *   read from the environment variable VAR, never from a flag.
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
import { isPlatformError } from "@effect/platform/Error"
import { Cause, Chunk, Clock, Duration, Effect, Exit, Fiber, Option, Schedule, Stream } from "effect"
import type { Scope } from "effect"
import * as AgentService from "../agent/AgentService.js"
import type * as TokenBudget from "../policy/TokenBudget.js"
import { TaskInvalid, type TaskRecord } from "../agent/AgentTask.js"
import * as ErrorInfo from "../events/ErrorInfo.js"
import type { AgentEvent } from "../events/AgentEvent.js"
import * as Progress from "../events/Progress.js"
import * as Argv from "./Argv.js"
import * as CommandSpec from "./CommandSpec.js"
import * as EventsFile from "./EventsFile.js"
import * as ModelOptions from "./ModelOptions.js"
import * as OptionValue from "./OptionValue.js"
import * as OutputFile from "./OutputFile.js"
import * as ProgressLine from "./ProgressLine.js"
import * as RecordSink from "./RecordSink.js"
import { Stdio } from "./Stdio.js"
import * as StoreCommands from "./StoreCommands.js"
import * as Summary from "./Summary.js"
import * as TaskSource from "./TaskSource.js"
import { usage } from "./UsageError.js"

/**
 * The parsed options of `wiz run`.
 *
 * @since 0.1.0
 * @category models
 */
export interface RunOptions extends ModelOptions.AgentOptions {
  /** A JSON Lines file of tasks, or `-` for stdin. */
  readonly input: string
  /** The records file; none for stdout. */
  readonly output: Option.Option<string>
  /**
   * Model calls at once; tasks asleep in a backoff or on an open circuit make room for more.
   * `adaptive`: a limit that finds the provider's knee by itself.
   */
  readonly concurrency: number | "adaptive"
  /** Append to `output`, skipping what it already records. */
  readonly resume: boolean
  /** Like `resume`, and run again the tasks whose record says they failed (rewriting `output`). */
  readonly retryFailed: boolean
  /**
   * Let `resume` / `retryFailed` add answers to an output whose answers came from another
   * model; without it that is a usage error.
   */
  readonly allowModelChange: boolean
  /** Draw the progress line on stderr. */
  readonly progress: boolean
  /** Write every agent event to this file as JSON Lines; none for no events file. */
  readonly events: Option.Option<string>
  /** Identical tasks in flight share one model call. */
  readonly coalesce: boolean
  /** Answer a repeated task from the memo within this time; none for no memo. */
  readonly memoTtl: Option.Option<Duration.Duration>
  /**
   * Stop the batch after this many tasks in a row fail `AuthenticationFailed` (a refused key):
   * the tasks not run get a `BatchStopped` record, and `--resume` runs them; 0 never stops.
   */
  readonly stopAfterAuthFailures: number
  /** Keep the batch in this store (a SQLite file or a `postgres://` URL): see `DurableRun`. */
  readonly store: Option.Option<string>
  /** With a PostgreSQL store: submit and write the records, leave the work to the workers. */
  readonly noWork: boolean
  /** With a PostgreSQL store: the address the other runners reach this one at. */
  readonly host: string
  /** With a PostgreSQL store: the interface this runner listens on; none for `host`. */
  readonly bind: Option.Option<string>
  /** With a PostgreSQL store: the port this runner listens on; none for a free one. */
  readonly port: Option.Option<number>
}

/**
 * The model and policies per `ModelOptions.defaults`, `output` stdout, `concurrency` per
 * `AgentService.defaults`, progress on, no events file, no coalescing, no memo.
 *
 * @since 0.1.0
 * @category defaults
 */
export const defaults: Omit<RunOptions, "input"> = {
  ...ModelOptions.defaults,
  output: Option.none(),
  concurrency: AgentService.defaults.concurrency,
  resume: false,
  retryFailed: false,
  allowModelChange: false,
  progress: true,
  events: Option.none(),
  coalesce: false,
  memoTtl: Option.none(),
  stopAfterAuthFailures: 3,
  store: Option.none(),
  noWork: false,
  host: "127.0.0.1",
  bind: Option.none(),
  port: Option.none()
}

/**
 * Follows the agent's events from now on: `handle` gets them a batch at a time (an uninterruptible
 * write of a batch is never cut in half), and `settle(finished)` waits until the events of
 * `finished` tasks have all been handled (each task's events come before its `TaskFinished`),
 * then stops. `guard(run)` runs `run` and fails it as soon as handling fails (the events file
 * could not be written): the subscription is lossless, so a follower that stopped would make the
 * agent wait forever.
 */
const follow = <E>(
  events: Stream.Stream<AgentEvent>,
  handle: (events: Chunk.Chunk<AgentEvent>) => Effect.Effect<void, E>
): Effect.Effect<{
  readonly guard: <A, E2, R>(run: Effect.Effect<A, E2, R>) => Effect.Effect<A, E | E2, R>
  readonly settle: (finished: number) => Effect.Effect<void, E>
}, never, Scope.Scope> =>
  Effect.gen(function*() {
    let seen = 0
    let expected = Number.POSITIVE_INFINITY
    const fiber = yield* events.pipe(
      Stream.mapChunksEffect((chunk) =>
        Effect.as(
          Effect.zipRight(handle(chunk), Effect.sync(() => {
            for (const event of chunk) if (event._tag === "TaskFinished") seen++
          })),
          Chunk.of(undefined)
        )
      ),
      Stream.takeWhile(() => seen < expected),
      Stream.runDrain,
      Effect.forkScoped
    )
    const failed: Effect.Effect<never, E> = Effect.flatMap(Fiber.await(fiber), (exit) =>
      Exit.isFailure(exit) && !Cause.isInterruptedOnly(exit.cause) ? Effect.failCause(exit.cause) : Effect.never)
    return {
      guard: (run) => Effect.raceFirst(run, failed),
      settle: (finished) =>
        Effect.suspend(() => {
          expected = finished
          return seen >= finished ? Fiber.interrupt(fiber) : Fiber.join(fiber)
        }).pipe(Effect.asVoid)
    }
  })

/**
 * What the progress line shows of the agent's flow control: the calls on the wire (so the tasks
 * taken up read `32 calling, 968 waiting`, not `1000 in flight` at `--concurrency 32`), the
 * limit when it moves (adaptive), and the tightest limited budget dimension with the calls
 * waiting for it, once one is known.
 */
const flowOf = (flow: AgentService.FlowState, adaptive: boolean): Progress.Flow => {
  let left: number | undefined
  let waiting = 0
  let shared: TokenBudget.State["shared"]
  for (const budget of Object.values(flow.budgets)) {
    waiting += budget.waiting
    shared ??= budget.shared
    for (const dimension of Object.values(budget.dimensions)) {
      if (dimension === undefined) continue
      const share = dimension.available / dimension.capacity
      left = left === undefined ? share : Math.min(left, share)
    }
  }
  return {
    calls: flow.active,
    ...(adaptive ? { limit: flow.limit } : {}),
    ...(left === undefined ? {} : { budgetLeft: Math.round(left * 100) / 100, budgetWaiting: waiting }),
    ...(shared === undefined ? {} : { budgetShared: shared })
  }
}

/**
 * Run the tasks of `options.input` and return the summary (also written to stderr).
 *
 * @since 0.1.0
 * @category handlers
 */
export const run = Effect.fn("RunCommand.run")(function*(options: RunOptions) {
  if (Option.isSome(options.store)) {
    const durable = yield* StoreCommands.durable
    return yield* durable.run({ ...options, store: options.store.value, listen: { host: options.host, bind: options.bind, port: options.port } })
  }
  const agentLayer = yield* ModelOptions.layer(options, {
    concurrency: options.concurrency,
    stopOnAuthFailures: options.stopAfterAuthFailures > 0 ? options.stopAfterAuthFailures : false,
    ...(options.coalesce ? { coalesce: true } : {}),
    ...Option.match(options.memoTtl, { onNone: () => ({}), onSome: (timeToLive) => ({ memo: { timeToLive } }) })
  })
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
  if (Option.isSome(options.events)) yield* EventsFile.check(options.events.value, options.input, options.output)
  const stdio = yield* Stdio
  const stats = yield* Summary.makeStats
  const startedAt = yield* Clock.currentTimeMillis
  // once the input and the output are open, a summary is printed however the run ends
  let started = false
  let summary: Summary.Summary | undefined
  // with --redis: how many processes shared the budget, as last seen
  let sharedBudget: TokenBudget.State["shared"]
  const finish = (exit: Exit.Exit<unknown, unknown>) =>
    Effect.gen(function*() {
      if (!started) return
      summary = yield* stats.summary((yield* Clock.currentTimeMillis) - startedAt)
      const interrupted = Exit.isFailure(exit) && Cause.isInterruptedOnly(exit.cause)
      const shared = options.coalesce || Option.isSome(options.memoTtl)
      const again = interrupted ? howToContinue(options, yield* givenArguments(options)) : ""
      const sharedLine = sharedBudget === undefined
        ? ""
        : `budget      shared through ${sharedBudget.store} by ${sharedBudget.processes} process${sharedBudget.processes === 1 ? "" : "es"}` +
          `${sharedBudget.mode === "local" ? ` (${sharedBudget.store} unavailable at the end: local)` : ""}\n`
      yield* stdio.stderr(Summary.render(summary, { shared }) + sharedLine + again)
    })

  yield* Effect.gen(function*() {
    const input = yield* TaskSource.open(options.input)
    const { existing, output } = yield* openOutput(options)
    const events = Option.isSome(options.events) ? Option.some(yield* EventsFile.open(options.events.value)) : Option.none()
    started = true
    const again = runsAgain(options, existing)
    const resume: TaskSource.ResumeSet = {
      ids: again.size === 0 ? existing.ids : new Set([...existing.ids].filter((id) => !again.has(id))),
      lines: existing.lines
    }
    const progress = yield* Progress.make()
    // what the output already answers is no work left: those lines not reached yet are left
    // out of the ETA (an estimate: the output may answer ids the input no longer has)
    yield* progress.setAnsweredAhead(resume.ids.size + resume.lines.size)
    const agent = yield* AgentService.AgentService
    const follower = yield* follow(yield* agent.subscribe, (chunk) =>
      Effect.zipRight(
        Effect.forEach(chunk, (event) => Effect.zipRight(stats.recordEvent(event), progress.record(event)), { discard: true }),
        Option.match(events, { onNone: () => Effect.void, onSome: (file) => file.write(Chunk.toReadonlyArray(chunk)) })
      ))
    const screen = options.progress ? Option.some(yield* ProgressLine.draw(progress)) : Option.none()
    const adaptive = options.concurrency === "adaptive"
    const reportFlow = Effect.flatMap(agent.flow, (flow) => {
      const reported = flowOf(flow, adaptive)
      sharedBudget = reported.budgetShared ?? sharedBudget
      return progress.setFlow(reported)
    })
    if (options.progress) yield* Effect.forkScoped(Effect.repeat(reportFlow, Schedule.spaced("250 millis")))
    // records on the terminal the progress line is drawn on go above it, never into it (the
    // line's terminal is stderr, whose writes cannot fail)
    const onScreen = Option.filter(screen, () => Option.isNone(options.output) && stdio.stdoutIsTTY)
    const write = (record: TaskRecord, count: Effect.Effect<void>) =>
      Effect.uninterruptible(Effect.zipRight(
        Option.match(onScreen, {
          onNone: () => output.sink.write(record),
          onSome: (line) => Effect.catchIf(line.around(output.sink.write(record)), isPlatformError, Effect.die)
        }),
        count
      ))
    // the total as far as known: estimated from a file's size while it is read, exact at its end
    const total = Effect.flatMap(input.total, (total) =>
      Option.match(total, {
        onNone: () => Effect.void,
        onSome: ({ estimated, lines }) => progress.setTotal(lines, { estimated })
      }))
    const lines = input.lines.pipe(
      Stream.mapChunksEffect((chunk) => Effect.as(total, chunk)),
      Stream.onEnd(Effect.zipRight(total, progress.setAnsweredAhead(0)))
    )
    const tasks = TaskSource.entries(lines, resume).pipe(
      Stream.tap(TaskSource.Entry.$match({
        Task: () => Effect.void,
        Invalid: ({ error }) =>
          write(new TaskInvalid({ line: error.line, error: ErrorInfo.fromError(error) }), Effect.zipRight(stats.recordInvalid, progress.invalid)),
        Resumed: () => Effect.zipRight(stats.recordSkipped, progress.skipped())
      })),
      Stream.filterMap((entry) => (entry._tag === "Task" ? Option.some(entry.task) : Option.none()))
    )
    const finished = yield* agent.processAll(tasks).pipe(
      Stream.runFoldEffect(0, (n, result) => Effect.as(write(result, stats.recordResult(result)), n + 1)),
      follower.guard
    )
    yield* follower.settle(finished)
    // the last line drawn says what the end is: no call on the wire
    if (options.progress || Option.isSome(options.redis ?? Option.none())) yield* reportFlow
    if (Option.isSome(events)) yield* events.value.commit
    yield* output.commit
  }).pipe(Effect.scoped, Effect.provide(agentLayer), Effect.onExit(finish))
  return summary!
})

/**
 * What to type to pick an interrupted run up where it stopped: the command as it was given
 * (`given`: every option, so the same model answers; no flag holds a key, only the name of
 * the variable that does), with `--resume` added unless it asks for `--resume` or
 * `--retry-failed` already, and `--output FILE` when the records went to stdout.
 */
const howToContinue = (options: RunOptions, given: ReadonlyArray<string>): string => {
  const again = given.includes("--resume") || given.includes("--retry-failed") ? [] : ["--resume"]
  const onStdin = options.input === "-" ? " (with the same tasks on standard input)" : ""
  return Option.match(options.output, {
    onNone: () =>
      `wiz: interrupted; the records so far went to stdout. To continue, keep them in a file and run${onStdin}:\n` +
      `  ${Argv.shellCommand(["wiz", ...given])} --output FILE --resume\n`,
    onSome: (output) =>
      `wiz: interrupted; what is done is in ${Argv.shellCommand([output])}. To continue, run${onStdin}:\n` +
      `  ${Argv.shellCommand(["wiz", ...given, ...again])}\n`
  })
}

/**
 * The arguments a run was given; for a run not started from the command line, the ones that
 * name its input and output.
 */
const givenArguments = (options: RunOptions) =>
  Effect.map(Effect.serviceOption(Argv.Given), Option.getOrElse(() => [
    "run",
    options.input,
    ...Option.match(options.output, { onNone: () => [], onSome: (output) => ["--output", output] }),
    ...(options.retryFailed ? ["--retry-failed"] : options.resume ? ["--resume"] : [])
  ]))

/**
 * `--resume` and `--retry-failed` add answers to an output; they refuse to mix the answers of
 * two models in it (pasting a command that left out `--model` would run the simulator into a
 * file of real answers) unless `--allow-model-change` says to. What answered is read from the
 * `model` of the succeeded records that no fallback answered (`degraded: false`): failed
 * records name no model.
 */
const checkModel = (options: RunOptions, existing: OutputFile.Existing, path: string) => {
  const ours = ModelOptions.answeredBy(options)
  const others = [...existing.models].filter(([model]) => model !== ours)
  if (others.length === 0 || options.allowModelChange) return Effect.void
  const theirs = others.map(([model, n]) => `${n} from ${model}`).join(", ")
  return Effect.fail(usage(
    `${options.retryFailed ? "--retry-failed" : "--resume"}: "${path}" holds answers from another model (${theirs}) ` +
      `and this run would answer with ${ours}; give the options of the run that wrote it (--model ...), ` +
      "or --allow-model-change to mix the two in one file"
  ))
}

/**
 * The tasks the output records that run again: the failed ones with `--retry-failed`; with
 * `--resume`, those never run (`BatchStopped`: the batch stopped on a refused key).
 */
const runsAgain = (options: RunOptions, existing: OutputFile.Existing): ReadonlySet<string> =>
  options.retryFailed ? existing.failed : options.resume ? existing.notRun : new Set()

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
    yield* checkModel(options, existing, path)
    if (Option.isSome(existing.torn)) {
      const { bytes, line } = existing.torn.value
      yield* Effect.flatMap(Stdio, (stdio) =>
        stdio.stderr(
          `wiz: the last line of "${path}" (line ${line}, ${bytes} bytes) is a record cut short by a crash; ` +
            "it is cut off and its task runs again\n"
        ))
    }
    const again = runsAgain(options, existing)
    const mode = again.size > 0 ? "rewrite" : keeps ? "append" : "truncate"
    return { existing, output: yield* OutputFile.open(path, mode, existing, again) }
  })

// -----------------------------------------------------------------------------
// command line
// -----------------------------------------------------------------------------

const io = (description: string) => CommandSpec.grouped("Input and output", description)

const runOptions = {
  input: Args.text({ name: "input" }).pipe(
    Args.withDescription("JSON Lines of tasks: a file, a pipe, or - for standard input (the default)"),
    Args.withDefault("-")
  ),
  output: Options.text("output").pipe(
    Options.withAlias("o"),
    Options.withPseudoName("FILE"),
    Options.withDescription(io("Write the records to FILE instead of stdout")),
    Options.optional
  ),
  resume: OptionValue.flag("resume", io("Append to --output, skipping the tasks it already records")),
  retryFailed: OptionValue.flag("retry-failed", io("Like --resume, and run the failed tasks again")),
  allowModelChange: OptionValue.flag(
    "allow-model-change",
    io("Let --resume mix answers from another model into --output")
  ),
  events: Options.text("events").pipe(
    Options.withPseudoName("FILE"),
    Options.withDescription(io("Agent events to FILE, JSON Lines (with --store: tasks run here)")),
    Options.optional
  ),
  noProgress: OptionValue.flag("no-progress", io("No progress line on stderr")),
  concurrency: OptionValue.integerOr("concurrency", 1, "adaptive").pipe(
    Options.withDescription(ModelOptions.flow(`Model calls at once, or adaptive (default ${defaults.concurrency})`)),
    Options.withDefault(defaults.concurrency)
  ),
  rpm: ModelOptions.policyOptions.rpm,
  tpm: ModelOptions.policyOptions.tpm,
  redis: ModelOptions.policyOptions.redis,
  redisTimeout: ModelOptions.policyOptions.redisTimeout,
  coalesce: OptionValue.flag("coalesce", ModelOptions.flow("Identical tasks in flight share one model call")),
  memoTtl: OptionValue.duration(
    "memo-ttl",
    "positive",
    ModelOptions.flow("Answer a task asked again within DURATION from the memo")
  ),
  stopAfterAuthFailures: OptionValue.integer("stop-after-auth-failures", 0).pipe(
    Options.withDescription(
      ModelOptions.policy(`Stop after N refused keys in a row (0: never; default ${defaults.stopAfterAuthFailures})`)
    ),
    Options.withDefault(defaults.stopAfterAuthFailures)
  ),
  retries: ModelOptions.policyOptions.retries,
  timeout: ModelOptions.policyOptions.timeout,
  deadline: ModelOptions.policyOptions.deadline,
  breakerOpen: ModelOptions.policyOptions.breakerOpen,
  ...StoreCommands.runOptions,
  ...ModelOptions.modelOptions
}

/**
 * The `run` subcommand.
 *
 * @since 0.1.0
 * @category commands
 */
export const command = Command.make("run", runOptions, ({ noProgress, ...rest }) =>
  Effect.asVoid(run({ ...rest, progress: !noProgress }))).pipe(
    Command.withDescription(
      "Run a JSON Lines file of agent tasks; one JSON record per line as each finishes. " +
        "Progress and a summary go to stderr."
    )
  )
