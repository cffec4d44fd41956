/**
 * `wiz ask "prompt"`: one answer, streamed to stdout as the model produces it, through the same
 * policies as `wiz run` (`AgentService.stream`): the attempt is retried, or waits on an open
 * circuit, only before its first chunk; after it, each silence is bounded, and a stream that
 * ends without its final chunk is an `IncompleteStream`, never taken for the whole answer. With
 * `--continue`, a stream that breaks mid-answer is continued from the text already printed, so
 * the reader sees one answer with no repeated words.
 *
 * - The model and policy options are `wiz run`'s (`ModelOptions`), with the embedded model's
 *   `--mid-stream-failure-rate` and `--mid-stream-failure` to make a stream break on purpose.
 * - `--deadline` bounds the whole answer, first byte to last (the agent's task deadline): a
 *   stream that keeps trickling a token now and then (never silent long enough for the idle
 *   timeout) ends at the deadline, with `DeadlineExceeded` (as `IncompleteStream`'s cause once
 *   text was printed).
 * - A typed error ends it with exit code 1 and {@link AskFailed}, which says how much of the
 *   answer was printed before it broke (the partial text stays on stdout, ended with a newline)
 *   and what broke it. What the policies did (retries, continuations) is said on stderr once the
 *   answer is over, so it never lands inside the answer on a terminal.
 *
 * @example
 * ```ts
 * import { Option } from "effect"
 * import * as AskCommand from "wiz-effect/cli/AskCommand"
 *
 * // what `wiz ask "Summarise: ..." --continue --mid-stream-failure-rate 1` does
 * const answer = AskCommand.ask({
 *   ...AskCommand.defaults,
 *   prompt: "Summarise: Effect is a TypeScript library.",
 *   continue: true,
 *   midStreamFailureRate: 1
 * })
 * ```
 *
 * @since 0.1.0
 */
import { Args, Command, Options } from "@effect/cli"
import { Effect, Either, Fiber, Option, Schema, Stream } from "effect"
import * as AgentService from "../agent/AgentService.js"
import { AgentTask } from "../agent/AgentTask.js"
import type { AgentEvent } from "../events/AgentEvent.js"
import { ErrorInfo } from "../events/ErrorInfo.js"
import * as CommandSpec from "./CommandSpec.js"
import * as ModelOptions from "./ModelOptions.js"
import * as OptionValue from "./OptionValue.js"
import * as RecordSink from "./RecordSink.js"
import { Stdio } from "./Stdio.js"
import { usage } from "./UsageError.js"

/**
 * The answer could not be given whole: `printedChars` of it were printed before `error` ended
 * it (0: none).
 *
 * @since 0.1.0
 * @category errors
 */
export class AskFailed extends Schema.TaggedError<AskFailed>()("AskFailed", {
  printedChars: Schema.Int,
  error: ErrorInfo,
  /** The answer broke mid-stream and `--continue` was not given. */
  couldContinue: Schema.Boolean
}) {
  override get message(): string {
    if (this.printedChars === 0) return `no answer: ${this.error.message}`
    return `the answer broke off after ${this.printedChars} characters (printed above): ${this.error._tag}: ${this.error.message}` +
      (this.couldContinue ? "; --continue asks the model to go on from there" : "")
  }
}

/**
 * The parsed options of `wiz ask`.
 *
 * @since 0.1.0
 * @category models
 */
export interface AskOptions extends ModelOptions.AgentOptions {
  readonly prompt: string
  /** The longest answer, in tokens; none for `AgentService.defaults.maxTokens`. */
  readonly maxTokens: Option.Option<number>
  /** After a mid-stream break, ask the next attempt to continue from the text printed. */
  readonly continue: boolean
  readonly midStreamFailureRate: number
  readonly midStreamFailure: "error" | "end"
}

/**
 * The model and policies per `ModelOptions.defaults`, `maxTokens` per `AgentService.defaults`,
 * no continuation, streams that do not break.
 *
 * @since 0.1.0
 * @category defaults
 */
export const defaults: Omit<AskOptions, "prompt"> = {
  ...ModelOptions.defaults,
  maxTokens: Option.none(),
  continue: false,
  midStreamFailureRate: 0,
  midStreamFailure: "error"
}

/** What the policies did, from the events of the answer, as a line for stderr (none: nothing). */
const describe = (events: ReadonlyArray<AgentEvent>): Option.Option<string> => {
  const notes: Array<string> = []
  const retries = events.filter((event) => event._tag === "RetryScheduled").length
  if (retries > 0) notes.push(`${retries === 1 ? "1 retry" : `${retries} retries`} before the answer started`)
  for (const event of events) {
    if (event._tag === "StreamContinued") {
      notes.push(`the stream broke after ${event.deliveredChars} characters (${event.error._tag}) and ${event.model} continued it`)
    } else if (event._tag === "FallbackUsed") {
      notes.push(`${event.tier} answered`)
    }
  }
  return notes.length === 0 ? Option.none() : Option.some(`wiz: ${notes.join("; ")}\n`)
}

/**
 * Stream the answer to `options.prompt` to stdout; fails with {@link AskFailed} when it cannot
 * be given whole.
 *
 * @since 0.1.0
 * @category handlers
 */
export const ask = Effect.fn("AskCommand.ask")(function*(options: AskOptions) {
  if (options.prompt.trim() === "") return yield* usage("the prompt is empty: wiz ask \"what to ask\"")
  const agentLayer = yield* ModelOptions.layer(options, { stream: { continue: options.continue } })
  const stdio = yield* Stdio
  if (stdio.stdoutClosed) {
    return yield* new RecordSink.OutputFailed({
      path: "-",
      operation: "write",
      reason: "standard output is closed, so the answer would be lost; redirect stdout"
    })
  }
  const task = new AgentTask({
    id: "ask",
    prompt: options.prompt,
    ...Option.match(options.maxTokens, { onNone: () => ({}), onSome: (maxTokens) => ({ maxTokens }) })
  })
  let printed = 0
  let endsWithNewline = true
  const write = (text: string) =>
    Effect.zipRight(
      Effect.mapError(stdio.stdout(text), RecordSink.failure("-", "write")),
      Effect.sync(() => {
        printed += text.length
        endsWithNewline = text.endsWith("\n")
      })
    )

  // the partial answer of a broken (or interrupted) stream ends its line (a newline that is
  // not part of the answer: not counted in `printed`)
  const endLine = Effect.suspend(() => {
    if (printed === 0 || endsWithNewline) return Effect.void
    endsWithNewline = true
    return Effect.ignore(stdio.stdout("\n"))
  })

  yield* Effect.gen(function*() {
    const agent = yield* AgentService.AgentService
    const seen: Array<AgentEvent> = []
    // every event of the answer, up to its TaskFinished (published however it ended, unless the
    // reader ended it: an interruption, a failed write)
    const follower = yield* (yield* agent.subscribe).pipe(
      Stream.takeUntil((event) => event._tag === "TaskFinished"),
      Stream.runForEach((event) => Effect.sync(() => void seen.push(event))),
      Effect.forkScoped
    )
    // the agent's deadline bounds the whole answer, however steadily it trickles
    const answered = yield* agent.stream(task).pipe(
      Stream.runForEach((chunk) => (chunk.delta === "" ? Effect.void : write(chunk.delta))),
      Effect.either
    )
    yield* endLine
    if (Either.isLeft(answered) && answered.left._tag === "OutputFailed") return yield* answered.left
    yield* Fiber.join(follower)
    yield* Option.match(describe(seen), { onNone: () => Effect.void, onSome: stdio.stderr })
    if (Either.isRight(answered)) return
    const error = answered.left
    // a break after text is an IncompleteStream whose cause is what broke it: AskFailed says how
    // much was printed itself, so it names the cause
    const cause = error._tag === "IncompleteStream" ? error.cause : undefined
    return yield* new AskFailed({
      printedChars: printed,
      error: cause ?? { _tag: error._tag, message: error.message },
      couldContinue: printed > 0 && !options.continue && error._tag !== "DeadlineExceeded" && cause?._tag !== "DeadlineExceeded"
    })
  }).pipe(Effect.onInterrupt(() => endLine), Effect.scoped, Effect.provide(agentLayer))
})

// -----------------------------------------------------------------------------
// command line
// -----------------------------------------------------------------------------

const answer = (description: string) => CommandSpec.grouped("The answer", description)

const askOptions = {
  prompt: Args.text({ name: "prompt" }).pipe(Args.withDescription("What to ask the model (quote it)")),
  maxTokens: OptionValue.integer("max-tokens", 1).pipe(
    Options.withDescription(answer(`The longest answer, in tokens (default ${AgentService.defaults.maxTokens})`)),
    Options.optional
  ),
  continue: OptionValue.flag("continue", answer("If the stream breaks, have the model go on from the text printed")),
  ...ModelOptions.policyOptions,
  ...ModelOptions.modelOptions,
  midStreamFailureRate: OptionValue.number("mid-stream-failure-rate", 0, 1).pipe(
    Options.withDescription(ModelOptions.simulator("Share of streams that break mid-answer, 0 to 1 (default 0)")),
    Options.withDefault(defaults.midStreamFailureRate)
  ),
  midStreamFailure: OptionValue.choice("mid-stream-failure", ["error", "end"]).pipe(
    Options.withDescription(ModelOptions.simulator(`How a stream breaks: an error, or an end too soon (default ${defaults.midStreamFailure})`)),
    Options.withDefault(defaults.midStreamFailure)
  )
}

/**
 * The `ask` subcommand.
 *
 * @since 0.1.0
 * @category commands
 */
export const command = Command.make("ask", askOptions, (options) => ask(options)).pipe(
  Command.withDescription(
    "Ask the model one question and stream the answer to stdout. " +
      "It goes through the same retries, timeouts and circuit breaker as wiz run."
  )
)
