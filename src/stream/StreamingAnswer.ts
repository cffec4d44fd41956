/**
 * One streamed answer, made resilient: the model's chunks as a `Stream`, with a first-chunk
 * timeout and an idle timeout, retried or handed to the next source (model, tier) transparently
 * *before* its first chunk, failing with {@link AiModel.IncompleteStream} (carrying the text
 * delivered) when it ends without its final chunk, and — opt-in — *continued* after a
 * mid-stream failure, so the reader sees one uninterrupted answer with no repeated words.
 *
 * The popular clients get streams wrong: a stream that ends without its end marker is taken as
 * success, and nothing is retried or falls back once a stream has started (Vercel's AI SDK
 * retries only the stream's set-up; Portkey's gateway ends its own response cleanly when the
 * upstream dies mid-answer). Here:
 *
 * - **Before the first chunk** an attempt is an ordinary effect (`start`): it opens the
 *   source's stream in a scope of its own and waits (at most `firstChunk`) for the first chunk.
 *   Your `policy` wraps it — `Retry`'s `apply`, a breaker's `execute`, a `Hedge` — and the
 *   sources are tried in order with `Fallback.run` (`fallThrough` decides which errors move on).
 *   An attempt that fails or is interrupted (a losing hedge) closes its stream at once.
 * - **After the first chunk** every chunk is passed on as it arrives, each wait bounded by
 *   `betweenChunks` (`ModelTimeout`): the model's time to produce the chunk once the reader asked
 *   for it, never the reader's own time. Nothing is buffered: each of the reader's pulls is one
 *   pull of the model's stream, so a slow reader slows the model (backpressure), and one that
 *   stops closes it. The idle timeout costs no fiber per chunk: one producer fiber runs the
 *   model's pulls on request and one watchdog fiber per attempt sleeps until the running pull's
 *   deadline.
 * - **A stream that ends** without a last chunk carrying `finishReason` and `usage` fails with
 *   `IncompleteStream { partial }`, the whole text delivered so far.
 * - **`continue`** (off by default): after a mid-stream failure (an error, an idle timeout, a
 *   missing end), the same source, then the later ones, are asked to continue from the text
 *   delivered (`Source.stream(delivered)`); only sources that say `canContinue` are asked
 *   (a model that cannot would repeat the answer from the start), at most `maxContinuations`
 *   times. The continuation's start goes through the same `policy`, timeouts and fallback. When
 *   nobody can continue, the stream fails cleanly with the error that broke it.
 * - **`deadline`** (none by default) bounds an answer's whole life, first pull to last chunk:
 *   a stream that keeps trickling a token now and then never trips `betweenChunks`, and would
 *   otherwise run until the source gives up. Past it the answer fails with
 *   `Retry.DeadlineExceeded` (how many attempts started, what it was waiting for), whatever it
 *   was doing, and is not continued. It costs no fiber of its own: the starts run under one
 *   shared timer, and the chunks under the idle timeout's watchdog, which sleeps to whichever
 *   comes first.
 *
 * Make the combinator once (`make(options)`) and call it per answer: its timers are shared.
 *
 * @example
 * ```ts
 * import { Effect, Stream } from "effect"
 * import { AiModel, Retry, StreamingAnswer } from "wiz-effect"
 *
 * const program = Effect.gen(function* () {
 *   const model = yield* AiModel.AiModel
 *   const retry = Retry.make({ maxAttempts: 3 })
 *   const answer = StreamingAnswer.make({
 *     firstChunk: "10 seconds",
 *     betweenChunks: "5 seconds",
 *     policy: (start) => retry.apply(start),
 *     continue: true
 *   })
 *   const request = new AiModel.CompletionRequest({ prompt: "Summarise: ...", maxTokens: 256 })
 *   yield* answer([StreamingAnswer.fromModel(model, request)]).pipe(
 *     Stream.runForEach((chunk) => Effect.sync(() => process.stdout.write(chunk.delta)))
 *   )
 * })
 * ```
 *
 * @since 0.1.0
 */
import { Chunk, Duration, Effect, Exit, ExecutionStrategy, Option, Predicate, Scope, Stream } from "effect"
import type { Clock, Fiber } from "effect"
import type { Array as Arr } from "effect"
import { durationUntil } from "../internal/sleepUntil.js"
import * as AiModel from "../model/AiModel.js"
import * as ErrorInfo from "../events/ErrorInfo.js"
import * as Fallback from "../policy/Fallback.js"
import * as Retry from "../policy/Retry.js"
import * as Timeout from "../policy/Timeout.js"

// -----------------------------------------------------------------------------
// models
// -----------------------------------------------------------------------------

/**
 * Where an answer's chunks come from: a model, a tier.
 *
 * @since 0.1.0
 * @category models
 */
export interface Source<out E = AiModel.ModelError, out R = never> {
  /** Reported in timeouts, `IncompleteStream` and the hooks. */
  readonly name: string
  /**
   * One attempt's chunks. `delivered` is the text the reader already has: `""` for a fresh
   * answer; otherwise (only when `canContinue`) the stream must bring what follows it.
   */
  readonly stream: (delivered: string) => Stream.Stream<AiModel.CompletionChunk, E, R>
  /** Whether `stream` can continue from a non-empty `delivered`. */
  readonly canContinue: boolean
}

/**
 * A model's stream for one request as a source; it continues (sending the delivered text as
 * `CompletionRequest.continuation`) when the model says `supportsContinuation`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromModel = (
  model: AiModel.AiModel.Service,
  request: AiModel.CompletionRequest
): Source<AiModel.ModelError> => ({
  name: model.name,
  canContinue: model.supportsContinuation === true,
  stream: (delivered) =>
    model.stream(delivered === "" ? request : new AiModel.CompletionRequest({ ...request, continuation: delivered }, true))
})

/**
 * An attempt whose first chunk has arrived: what `start` gives and a `policy` passes on. Opaque.
 *
 * @since 0.1.0
 * @category models
 */
export interface Started {
  readonly [StartedTypeId]: typeof StartedTypeId
}

const StartedTypeId: unique symbol = Symbol.for("wiz-effect/StreamingAnswer/Started")

/**
 * Why an attempt did not start: the source's error, no first chunk within `firstChunk`, or a
 * stream that ended before its first chunk.
 *
 * @since 0.1.0
 * @category models
 */
export type StartError<E> = E | AiModel.ModelTimeout | AiModel.IncompleteStream

/**
 * Why a started stream broke: the source's error, a gap longer than `betweenChunks`, or an end
 * without the final chunk.
 *
 * @since 0.1.0
 * @category models
 */
export type MidStreamError<E> = E | AiModel.ModelTimeout | AiModel.IncompleteStream

/**
 * Told when an attempt has delivered its first chunk.
 *
 * @since 0.1.0
 * @category models
 */
export interface StartedInfo<out E2> {
  readonly source: string
  /** The source's place in the list: 0 is the primary, more is a fallback (degraded). */
  readonly index: number
  /** Why each source tried before it in this start failed. */
  readonly failures: ReadonlyArray<Fallback.Failure<E2>>
  /** Characters delivered before this attempt: more than 0 for a continuation. */
  readonly deliveredChars: number
}

/**
 * Told when a broken stream is continued: which source continues, from how many characters,
 * after which error.
 *
 * @since 0.1.0
 * @category models
 */
export interface ContinuedInfo<out E> {
  readonly source: string
  readonly deliveredChars: number
  readonly error: MidStreamError<E>
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options<E, R, E2, R2> {
  /** Longest wait for an attempt's first chunk; `Duration.infinity` for none. */
  readonly firstChunk?: Duration.DurationInput
  /** Longest wait for each later chunk; `Duration.infinity` for none. */
  readonly betweenChunks?: Duration.DurationInput
  /**
   * Longest an answer may take in all, from its stream's start to its last chunk (starts,
   * retries, fallbacks, chunks, continuations, the reader's own time); past it the answer fails
   * with `Retry.DeadlineExceeded`. `Duration.infinity` (the default) for none.
   */
  readonly deadline?: Duration.DurationInput
  /**
   * What wraps each attempt's start (up to its first chunk), per source: a retry policy, a
   * breaker, a hedge. Identity by default: one try per source.
   */
  readonly policy?: (start: Effect.Effect<Started, StartError<E>, R>, source: Source<E, R>) => Effect.Effect<Started, E2, R2>
  /** Which start errors move on to the next source (`Fallback.defaults.fallThrough` by default). */
  readonly fallThrough?: (error: E2) => boolean
  /** Continue a broken stream from the text delivered: `true`, or with a bound on how often. */
  readonly continue?: boolean | { readonly maxContinuations?: number }
  /** Called when an attempt delivers its first chunk (a `FallbackUsed` event when `index` > 0). */
  readonly onStarted?: (info: StartedInfo<E2>) => Effect.Effect<void>
  /** Called when a continuation has started (a `StreamContinued` event). */
  readonly onContinued?: (info: ContinuedInfo<E>) => Effect.Effect<void>
}

/**
 * `firstChunk: 30 s`: a time to first token of a few seconds is normal for a long prompt, half
 * a minute means the call is stuck. `betweenChunks: 10 s`: tokens come every 10–100 ms, so a
 * gap of seconds is a stalled connection. `continue: false`: continuing is opt-in, since it
 * needs sources that can. `maxContinuations: 3`: a source that breaks every answer must not
 * loop forever. `deadline: infinity`: an answer's whole life is bounded only when you say how
 * long it may be (`AgentService` gives its task deadline).
 *
 * @since 0.1.0
 * @category defaults
 */
export const defaults = {
  firstChunk: Duration.seconds(30),
  betweenChunks: Duration.seconds(10),
  deadline: Duration.infinity,
  continue: false,
  maxContinuations: 3
} as const

// -----------------------------------------------------------------------------
// constructors
// -----------------------------------------------------------------------------

/**
 * The combinator: given the sources of one answer (in fallback order), its stream. Its timers
 * are shared by every answer it makes.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <E = AiModel.ModelError, R = never, E2 = StartError<E>, R2 = R>(
  options: Options<E, R, E2, R2> = {}
): (
  sources: Arr.NonEmptyReadonlyArray<Source<E, R>>
) => Stream.Stream<AiModel.CompletionChunk, E2 | Fallback.AllTiersFailed<E2> | MidStreamError<E> | Retry.DeadlineExceeded, R | R2> => {
  const pullOf = makePull(options)
  return (sources) => Stream.fromPull(pullOf(sources))
}

/**
 * The hooks of one answer, in place of the options' own: what a caller that makes many answers
 * with one {@link makePull} (its timers shared by all) knows only per answer, such as the task
 * a retry policy reports on.
 *
 * @since 0.1.0
 * @category models
 */
export type AnswerHooks<E, R, E2, R2> = Pick<Options<E, R, E2, R2>, "policy" | "onStarted" | "onContinued">

/**
 * The pull of an answer's stream: each run gives its next chunks, fails with `None` at its end
 * or `Some(error)` when it breaks. {@link make} is `Stream.fromPull` over it; a reader that
 * pulls chunks itself (a gateway waits for the first before it answers) takes it as it is,
 * without the channel that `Stream.toPull` would run over the stream. The attempts live in the
 * scope the pull is made in. One `makePull(options)` serves many answers with shared timers;
 * `hooks`, when given, are that answer's policy and callbacks in place of the options' own.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makePull = <E = AiModel.ModelError, R = never, E2 = StartError<E>, R2 = R>(
  options: Options<E, R, E2, R2> = {}
): (
  sources: Arr.NonEmptyReadonlyArray<Source<E, R>>,
  hooks?: AnswerHooks<E, R, E2, R2>
) => Effect.Effect<
  Effect.Effect<Chunk.Chunk<AiModel.CompletionChunk>, Option.Option<E2 | Fallback.AllTiersFailed<E2> | MidStreamError<E> | Retry.DeadlineExceeded>, R | R2>,
  never,
  Scope.Scope
> => {
  const firstChunk = options.firstChunk ?? defaults.firstChunk
  const betweenChunks = options.betweenChunks ?? defaults.betweenChunks
  const noPolicy = (start: Effect.Effect<Started, StartError<E>, R>) => start as unknown as Effect.Effect<Started, E2, R2>
  const fallThrough: (error: E2) => boolean = options.fallThrough ?? Fallback.defaults.fallThrough
  const continues = options.continue !== undefined && options.continue !== false
  const maxContinuations = typeof options.continue === "object"
    ? options.continue.maxContinuations ?? defaults.maxContinuations
    : defaults.maxContinuations
  if (!(Number.isInteger(maxContinuations) && maxContinuations >= 0)) {
    throw new RangeError(`StreamingAnswer: maxContinuations must be a non-negative integer (got ${maxContinuations})`)
  }

  // One first-chunk timeout per source name (it names it in ModelTimeout), shared by every answer.
  const firstTimers = new Map<string, Limit>()
  const firstTimer = (name: string): Limit => {
    let found = firstTimers.get(name)
    if (found === undefined) {
      found = Timeout.attempt({ duration: firstChunk, model: name })
      firstTimers.set(name, found)
    }
    return found
  }
  const idle = Duration.decode(betweenChunks)
  const idleMillis = Duration.isFinite(idle) ? Duration.toMillis(idle) : undefined
  const deadline = Duration.decode(options.deadline ?? defaults.deadline)
  const deadlineMillis = Duration.isFinite(deadline) ? Duration.toMillis(deadline) : undefined
  // The starts' bound: one timer shared by every answer (chunks are timed by `Idle`'s watchdog).
  const startTimer = deadlineMillis === undefined ? undefined : Timeout.timer()

  type Err = E2 | Fallback.AllTiersFailed<E2> | MidStreamError<E> | Retry.DeadlineExceeded
  type Pull = Effect.Effect<Chunk.Chunk<AiModel.CompletionChunk>, Option.Option<Err>, R | R2>

  return (sources, hooks) =>
    Effect.map(Effect.zip(Effect.scope, Effect.clock), ([outer, clock]): Pull => {
      const { onContinued, onStarted, policy = noPolicy } = hooks ?? options
      let delivered = ""
      let current: Attempt<E, R> | undefined = undefined
      let continuations = 0
      let finished = false
      let attempts = 0
      let lastError: MidStreamError<E> | undefined = undefined
      // The answer's deadline on the clock's monotonic line (Infinity: none), and whether it passed.
      const endsAt = deadlineMillis === undefined ? Infinity : nowMillis(clock) + deadlineMillis
      let expired = false
      const deadlineExceeded = (waitingFor: string): Retry.DeadlineExceeded => {
        expired = true
        const last = errorInfo(lastError)
        return new Retry.DeadlineExceeded({ deadline, attempts, waitingFor, ...(last === undefined ? {} : { lastError: last }) })
      }
      const rest = () => `the rest of the answer (${delivered.length} characters delivered)`
      /** `effect` (a start), failing with `DeadlineExceeded` when the answer's deadline passes first. */
      const bounded = <A, X, Y>(effect: Effect.Effect<A, X, Y>, waitingFor: () => string): Effect.Effect<A, X | Retry.DeadlineExceeded, Y> =>
        startTimer === undefined ? effect : Effect.suspend(() => {
          const left = endsAt - nowMillis(clock)
          if (left <= 0) return Effect.fail(deadlineExceeded(waitingFor()))
          return startTimer.within(effect, Duration.millis(left), () => deadlineExceeded(waitingFor()))
        })

      /** Opens `source`'s stream in its own scope and waits for its first chunk; closes it unless that arrives. */
      const startOne = (source: Source<E, R>, index: number, from: string): Effect.Effect<Started, StartError<E>, R> =>
        Effect.uninterruptibleMask((restore) =>
          Effect.flatMap(Scope.fork(outer, ExecutionStrategy.sequential), (scope) => {
            attempts++
            const opened = Effect.flatMap(
              Scope.extend(Stream.toPull(source.stream(from)), scope),
              (pull) =>
                Effect.flatMap(firstTimer(source.name)(firstPull(pull, source.name, from)), (first) => {
                  if (idleMillis === undefined && endsAt === Infinity) {
                    return Effect.succeed(new Attempt(pull, scope, first, source, index) as unknown as Started)
                  }
                  // Later chunks: pulled by one producer fiber, timed by one watchdog (see `Idle`).
                  // made only if it fires: an error's stack trace costs ~10 µs, once per attempt otherwise
                  const timeout = () => new AiModel.ModelTimeout({ model: source.name, timeout: idle })
                  const timed = new Idle(pull, clock, idleMillis ?? Infinity, timeout, endsAt, () => deadlineExceeded(rest()))
                  return Effect.as(
                    Scope.extend(timed.start, scope),
                    new Attempt(timed.next, scope, first, source, index) as unknown as Started
                  )
                })
            )
            return Effect.onExit(restore(opened), (exit) => Exit.isSuccess(exit) ? Effect.void : Scope.close(scope, exit))
          })
        )

      /** Starts the answer (or its continuation) from source `from` on, through the policy and the fallback. */
      const begin = (from: number): Effect.Effect<Attempt<E, R>, E2 | Fallback.AllTiersFailed<E2>, R | R2> => {
        const text = delivered
        const eligible: Array<readonly [Source<E, R>, number]> = []
        for (let i = from; i < sources.length; i++) {
          if (text === "" || sources[i]!.canContinue) eligible.push([sources[i]!, i])
        }
        const tier = ([source, index]: readonly [Source<E, R>, number]) =>
          Fallback.tier(source.name, policy(startOne(source, index, text), source))
        const started: Effect.Effect<
          { readonly value: Started; readonly failures: ReadonlyArray<Fallback.Failure<E2>> },
          E2 | Fallback.AllTiersFailed<E2>,
          R | R2
        > = eligible.length === 1
          ? Effect.map(tier(eligible[0]!).run, (value) => ({ value, failures: [] }))
          : Fallback.run(eligible.map(tier) as unknown as Arr.NonEmptyReadonlyArray<Fallback.Tier<Started, E2, R | R2>>, {
            fallThrough
          })
        return Effect.flatMap(started, ({ failures, value }) => {
          const attempt = value as unknown as Attempt<E, R>
          current = attempt
          return onStarted === undefined
            ? Effect.succeed(attempt)
            : Effect.as(
              onStarted({ source: attempt.source.name, index: attempt.index, failures, deliveredChars: text.length }),
              attempt
            )
        })
      }

      const deliver = (chunks: Chunk.Chunk<AiModel.CompletionChunk>): Pull => {
        for (const chunk of chunks) {
          delivered += chunk.delta
          current!.last = chunk
        }
        return Effect.succeed(chunks)
      }

      const fail = (error: Err): Pull => {
        finished = true
        return Effect.fail(Option.some(error))
      }

      /**
       * The current attempt broke after delivering text: continue it, or fail with `error`. Past
       * the deadline (the watchdog's `DeadlineExceeded`, or any error that came after it) the
       * answer is over.
       */
      const broke = (error: MidStreamError<E> | Retry.DeadlineExceeded): Pull => {
        const attempt = current!
        current = undefined
        const over = expired || nowMillis(clock) >= endsAt
        return Effect.zipRight(
          Scope.close(attempt.scope, Exit.fail(error)),
          Effect.suspend((): Pull => {
            if (over) return fail(deadlineExceeded(rest()))
            // our DeadlineExceeded comes only once the deadline has passed
            const broken = error as MidStreamError<E>
            lastError = broken
            const canContinue = continues && continuations < maxContinuations &&
              sources.slice(attempt.index).some((source) => delivered === "" || source.canContinue)
            if (!canContinue) return fail(broken)
            continuations++
            const deliveredChars = delivered.length
            return Effect.matchEffect(bounded(begin(attempt.index), () => `a continuation (${deliveredChars} characters delivered)`), {
              onFailure: fail,
              onSuccess: (next) => {
                const first = next.first!
                next.first = undefined
                const told = onContinued === undefined
                  ? Effect.void
                  : onContinued({ source: next.source.name, deliveredChars, error: broken })
                return Effect.zipRight(told, deliver(first))
              }
            })
          })
        )
      }

      const pull: Pull = Effect.suspend((): Pull => {
        if (finished) return Effect.fail(Option.none())
        const attempt = current
        if (attempt === undefined) {
          return Effect.matchEffect(bounded(begin(0), () => "the first chunk"), {
            onFailure: fail,
            onSuccess: (next) => {
              const first = next.first!
              next.first = undefined
              return deliver(first)
            }
          })
        }
        // The reader came back after the deadline: the answer is over.
        if (endsAt !== Infinity && nowMillis(clock) >= endsAt) return broke(deadlineExceeded(rest()))
        return Effect.matchEffect(attempt.pull, {
          onSuccess: (chunks) => (Chunk.isEmpty(chunks) ? pull : deliver(chunks)),
          onFailure: (error): Pull => {
            if (Option.isOption(error)) {
              if (Option.isSome(error)) return broke(error.value)
              // The source's stream ended: with its final chunk, the answer is complete.
              const last = attempt.last
              if (last !== undefined && last.finishReason !== undefined && last.usage !== undefined) {
                finished = true
                current = undefined
                return Effect.zipRight(Scope.close(attempt.scope, Exit.void), Effect.fail(Option.none()))
              }
              return broke(
                new AiModel.IncompleteStream({
                  model: attempt.source.name,
                  partial: delivered,
                  reason: "the stream ended without its final chunk"
                })
              )
            }
            return broke(error)
          }
        })
      })
      return pull
    })
}

// -----------------------------------------------------------------------------
// internal
// -----------------------------------------------------------------------------

type Limit = <A, X, Y>(self: Effect.Effect<A, X, Y>) => Effect.Effect<A, X | AiModel.ModelTimeout, Y>

type Pull<E, R> = Effect.Effect<
  Chunk.Chunk<AiModel.CompletionChunk>,
  Option.Option<E> | AiModel.ModelTimeout | Retry.DeadlineExceeded,
  R
>

/** The tag and message of a tagged error; `undefined` for anything else. */
const errorInfo = (error: unknown): ErrorInfo.ErrorInfo | undefined =>
  Predicate.hasProperty(error, "_tag") && typeof error._tag === "string" &&
    Predicate.hasProperty(error, "message") && typeof error.message === "string"
    ? ErrorInfo.fromError({ _tag: error._tag, message: error.message })
    : undefined

/** Now in milliseconds on `clock`'s monotonic time line (`currentTimeMillis` follows the wall clock, which jumps). */
const nowMillis = (clock: Clock.Clock): number => Number(clock.unsafeCurrentTimeNanos()) / 1_000_000

/** A started attempt: its pull (timed when there is an idle timeout), its scope, its first chunks until delivered, the last chunk seen. */
class Attempt<E, R> {
  last: AiModel.CompletionChunk | undefined = undefined
  constructor(
    readonly pull: Pull<E, R>,
    readonly scope: Scope.CloseableScope,
    public first: Chunk.Chunk<AiModel.CompletionChunk> | undefined,
    readonly source: Source<E, R>,
    readonly index: number
  ) {}
}

type PullExit<E> = Exit.Exit<Chunk.Chunk<AiModel.CompletionChunk>, Option.Option<E> | AiModel.ModelTimeout | Retry.DeadlineExceeded>

/**
 * The idle timeout of one attempt, without a fiber per chunk. Racing each pull against a timer
 * (`Effect.timeoutFail`, `Timeout.attempt`) forks a fiber per chunk: measured ~25–45 µs a chunk
 * on a busy 2-core machine, several times the pull itself, against ~1–4 µs for the two hand-offs
 * below (`bench/streams.ts` has the whole-answer figures). Instead, one *producer* fiber runs the model's
 * pulls, one at a time and only when the reader asks (`next`), so the reader's backpressure
 * still reaches the model; and one *watchdog* fiber sleeps on the `Clock` until the running
 * pull's deadline (its start + `idleMillis`), re-arming when a later pull has started since,
 * and parking while no pull runs. At the deadline it interrupts the producer and fails the
 * reader's pull with `ModelTimeout`, exactly then.
 */
class Idle<E, R> {
  private waiter: ((exit: PullExit<E>) => void) | undefined = undefined
  private request: (() => void) | undefined = undefined
  private requested = false
  private pulling = false
  private pullStartedAt = 0
  private watchdogParked: (() => void) | undefined = undefined
  private producer: Fiber.RuntimeFiber<void> | undefined = undefined
  /** Why the reader's pulls fail from now on, once a limit has run out. */
  private timedOut: AiModel.ModelTimeout | Retry.DeadlineExceeded | undefined = undefined

  constructor(
    private readonly modelPull: Effect.Effect<Chunk.Chunk<AiModel.CompletionChunk>, Option.Option<E>, R>,
    private readonly clock: Clock.Clock,
    /** The idle limit, `Infinity` for none. */
    private readonly idleMillis: number,
    /** The idle timeout's error, made when it fires. */
    private readonly timeout: () => AiModel.ModelTimeout,
    /** The answer's deadline (`nowMillis`), `Infinity` for none, and its error. */
    private readonly deadlineAt: number,
    private readonly deadlineExceeded: () => Retry.DeadlineExceeded
  ) {}

  private now(): number {
    return nowMillis(this.clock)
  }

  /** The producer and the watchdog, forked in the attempt's scope (closing it stops both). */
  get start(): Effect.Effect<void, never, R | Scope.Scope> {
    const awaitRequest = Effect.async<void>((resume) => {
      if (this.requested) {
        this.requested = false
        return resume(Effect.void)
      }
      this.request = () => resume(Effect.void)
    })
    const produce: Effect.Effect<void, never, R> = Effect.zipRight(
      awaitRequest,
      Effect.flatMap(Effect.exit(this.modelPull), (exit) =>
        Effect.suspend(() => {
          this.deliver(exit)
          return produce
        }))
    )
    const park = Effect.async<void>((resume) => {
      this.watchdogParked = () => resume(Effect.void)
    })
    const watch: Effect.Effect<void> = Effect.suspend(() => {
      if (this.timedOut !== undefined) return Effect.void
      if (!this.pulling) return Effect.zipRight(park, watch)
      // the running pull's limit: its idle timeout, or the answer's deadline if that comes first
      const now = this.now()
      const idleAt = this.pullStartedAt + this.idleMillis
      const due = Math.min(idleAt, this.deadlineAt)
      if (now < due) return Effect.zipRight(this.clock.sleep(durationUntil(now, due, this.clock.unsafeCurrentTimeMillis())), watch)
      const failure = this.deadlineAt <= idleAt ? this.deadlineExceeded() : this.timeout()
      this.timedOut = failure
      this.producer?.unsafeInterruptAsFork(this.producer.id())
      this.deliver(Exit.fail(failure))
      return Effect.void
    })
    return Effect.flatMap(Effect.forkScoped(produce), (producer) => {
      this.producer = producer
      return Effect.asVoid(Effect.forkScoped(watch))
    })
  }

  private deliver(exit: PullExit<E>): void {
    if (!this.pulling) return
    this.pulling = false
    const waiter = this.waiter
    this.waiter = undefined
    waiter?.(exit)
  }

  /**
   * The next chunk, pulled by the producer, failing with `ModelTimeout` when it takes longer
   * than `idleMillis`, or `DeadlineExceeded` when the answer's deadline comes first.
   */
  readonly next: Pull<E, R> = Effect.async((resume) => {
    if (this.timedOut !== undefined) return resume(Exit.fail(this.timedOut))
    this.waiter = resume
    this.pulling = true
    this.pullStartedAt = this.now()
    const watchdog = this.watchdogParked
    this.watchdogParked = undefined
    watchdog?.()
    const request = this.request
    this.request = undefined
    if (request === undefined) this.requested = true
    else request()
    return Effect.sync(() => {
      this.waiter = undefined
    })
  })
}

/** Pulls until a non-empty chunk; a stream that ends first is an `IncompleteStream`. */
const firstPull = <E, R>(
  pull: Effect.Effect<Chunk.Chunk<AiModel.CompletionChunk>, Option.Option<E>, R>,
  model: string,
  delivered: string
): Effect.Effect<Chunk.Chunk<AiModel.CompletionChunk>, E | AiModel.IncompleteStream, R> => {
  const loop: Effect.Effect<Chunk.Chunk<AiModel.CompletionChunk>, E | AiModel.IncompleteStream, R> = Effect.matchEffect(
    pull,
    {
      onSuccess: (chunks) => (Chunk.isEmpty(chunks) ? loop : Effect.succeed(chunks)),
      onFailure: (error): Effect.Effect<never, E | AiModel.IncompleteStream> =>
        Option.isSome(error)
          ? Effect.fail(error.value)
          : Effect.fail(
            new AiModel.IncompleteStream({ model, partial: delivered, reason: "the stream ended before its first chunk" })
          )
    }
  )
  return loop
}
