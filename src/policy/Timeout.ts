/**
 * Timeouts for model calls, failing with the typed {@link AiModel.ModelTimeout}:
 * - `attempt`: one call must answer within a duration;
 * - `firstChunk`: a stream must start within a duration (time to first token);
 * - `betweenChunks`: a stream must never stall longer than a duration.
 *
 * A timed-out attempt is interrupted, and `attempt` returns only once it has really stopped,
 * its finalizers included. Put the timeout inside the permit,
 * `bulkhead.withPermit(Timeout.attempt(options)(call))`, and the permit is held until the call
 * has ended, so the number of calls on the wire never exceeds the limit. opossum and p-queue
 * free the slot when the timer fires while the call still runs, and overshoot their limit.
 * A timeout interrupts only the calls whose own deadline has passed (opossum's timeout can
 * abort every in-flight call that shares its signal).
 *
 * Time is read only through Effect's `Clock`, so timeouts are exact under `TestClock`.
 *
 * How `attempt` stays cheap: `Effect.timeoutFail` races the call against a sleep, forking two
 * fibers per call. `attempt` forks only the call. The calls of one `attempt(options)` instance
 * share a timer: their deadlines in a queue (one duration for all, so a new deadline goes at
 * the tail, in O(1)) and one daemon fiber that sleeps on the callers' `Clock` until the
 * earliest, then interrupts every call whose time is up, without waiting: each caller awaits
 * its own call, and reports `ModelTimeout` only when the timer interrupted it. A call that ends
 * leaves the queue. When the queue empties, the timer is stopped by a task on Effect's
 * scheduler unless a call has come in by then: back-to-back calls keep one timer, and an idle
 * program holds no pending sleep (which would keep Node from exiting). A call under another
 * `Clock` while the timer still serves calls (two `TestClock`s sharing an instance at once)
 * falls back to its own `Effect.timeoutFail`. Measured with `npm run bench` (node 20, model
 * answering at once, sequential calls): ~12 µs per call, against 23–31 µs for
 * `Effect.timeoutFail` and ~11–13 µs for a bare `Effect.fork` + `Fiber.join`.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { AiModel, Bulkhead, Timeout } from "wiz-effect"
 *
 * const program = Effect.gen(function* () {
 *   const model = yield* AiModel.AiModel
 *   const bulkhead = yield* Bulkhead.make({ permits: 8 })
 *   const request = new AiModel.CompletionRequest({ prompt: "Summarise: ...", maxTokens: 64 })
 *   const completion = yield* model.generate(request).pipe(
 *     Timeout.attempt({ duration: "30 seconds", model: model.name }),
 *     bulkhead.withPermit
 *   )
 *   const chunks = model.stream(request).pipe(
 *     Timeout.firstChunk({ duration: "10 seconds", model: model.name }),
 *     Timeout.betweenChunks({ duration: "5 seconds", model: model.name })
 *   )
 * })
 * ```
 *
 * @since 0.1.0
 */
import { Clock, Context, Duration, Effect, Option, Stream } from "effect"
import type { Fiber, FiberId, Scheduler } from "effect"
import { durationUntil } from "../internal/sleepUntil.js"
import { ModelTimeout } from "../model/AiModel.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** How long to wait. `Duration.infinity` means no timeout. */
  readonly duration: Duration.DurationInput
  /** The model called, reported in the {@link ModelTimeout}. */
  readonly model: string
}

/**
 * Fails with `ModelTimeout` when `self` has not ended within `duration`, after interrupting it
 * and waiting for it to stop. A result (success or failure) before the deadline is returned
 * unchanged, and interrupting the caller interrupts `self` and waits for it. With an infinite
 * duration, `self` is returned as it is.
 *
 * Call `attempt(options)` once and reuse the function it returns: its calls share one timer.
 *
 * @since 0.1.0
 * @category combinators
 */
export const attempt = (
  options: Options
): <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E | ModelTimeout, R> => {
  const duration = Duration.decode(options.duration)
  if (!Duration.isFinite(duration)) return (self) => self
  const shared = timer()
  const onTimeout = () => new ModelTimeout({ model: options.model, timeout: duration })
  return (self) => shared.within(self, duration, onTimeout)
}

/**
 * The timeout itself, for any error: `make(duration)` returns `within(self, onTimeout)`, which
 * fails with `onTimeout()` when `self` has not ended within `duration`, after interrupting it
 * and waiting for it to stop — `attempt` with the error chosen per call (say, one that names the
 * task it belongs to). The calls of one `make(duration)` share one timer, as `attempt`'s do.
 * With an infinite duration, `self` is returned as it is.
 *
 * @example
 * ```ts
 * import { Data, Effect } from "effect"
 * import { Timeout } from "wiz-effect"
 *
 * class TooSlow extends Data.TaggedError("TooSlow")<{ readonly id: string }> {}
 * const within = Timeout.make("2 minutes")
 * const task = (id: string) => within(Effect.never, () => new TooSlow({ id }))
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  duration: Duration.DurationInput
): <A, E, R, E2>(self: Effect.Effect<A, E, R>, onTimeout: () => E2) => Effect.Effect<A, E | E2, R> => {
  const decoded = Duration.decode(duration)
  if (!Duration.isFinite(decoded)) return (self) => self
  const shared = timer()
  return (self, onTimeout) => shared.within(self, decoded, onTimeout)
}

/**
 * A timer shared by calls that each bring their own duration and error, for callers whose
 * time limit varies per call (what is left of a deadline, say). `attempt` and `make` are built
 * on it; its calls behave as theirs do.
 *
 * @since 0.1.0
 * @category models
 */
export interface Timer {
  /**
   * Fails with `onTimeout()` when `self` has not ended within `duration`, after interrupting it
   * and waiting for it to stop. An infinite duration runs `self` as it is; with zero, `self`
   * keeps only an answer it has by the time the timer runs.
   */
  readonly within: <A, E, R, E2>(
    self: Effect.Effect<A, E, R>,
    duration: Duration.Duration,
    onTimeout: () => E2
  ) => Effect.Effect<A, E | E2, R>
}

/**
 * A new shared timer, with no fiber until a call needs one.
 *
 * @since 0.1.0
 * @category constructors
 */
export const timer = (): Timer => {
  const deadlines = new Deadlines()
  const within = <A, E, R, E2>(
    self: Effect.Effect<A, E, R>,
    duration: Duration.Duration,
    onTimeout: () => E2
  ): Effect.Effect<A, E | E2, R> => {
    if (!Duration.isFinite(duration)) return self
    const millis = Duration.toMillis(duration)
    return Effect.withFiberRuntime<A, E | E2, R>((caller) => {
      const clock = Context.get(caller.currentDefaultServices, Clock.Clock)
      if (!deadlines.serves(clock)) return Effect.timeoutFail(self, { duration, onTimeout })
      return Effect.uninterruptibleMask((restore) =>
        Effect.flatMap(Effect.fork(restore(self)), (fiber) => {
          const entry = deadlines.add(fiber, caller.id(), nowMillis(clock) + millis)
          // Interrupting the caller interrupts its child `fiber` at once, even while it is uninterruptible.
          const outcome = Effect.flatMap(fiber.await, (exit): Effect.Effect<A, E | E2> => {
            deadlines.remove(entry, caller.currentScheduler)
            if (entry.timedOut) return Effect.failSync(onTimeout)
            return exit
          })
          const start = deadlines.timerFor(clock, entry)
          return start === undefined ? outcome : Effect.zipRight(start, outcome)
        })
      )
    })
  }
  return { within }
}

/**
 * Fails the stream with `ModelTimeout` when its first chunk has not arrived within
 * `duration`; later chunks may take as long as they like. Chunks are counted as the stream's
 * pulls, like `Stream.timeoutFail` does.
 *
 * @since 0.1.0
 * @category combinators
 */
export const firstChunk = (
  options: Options
): <A, E, R>(self: Stream.Stream<A, E, R>) => Stream.Stream<A, E | ModelTimeout, R> => {
  const duration = Duration.decode(options.duration)
  if (!Duration.isFinite(duration)) return (self) => self
  const onTimeout = () => Option.some(new ModelTimeout({ model: options.model, timeout: duration }))
  return <A, E, R>(self: Stream.Stream<A, E, R>) =>
    Stream.fromPull(Effect.map(Stream.toPull(self), (pull) => {
      let first = true
      return Effect.suspend(() => {
        if (!first) return pull
        first = false
        return Effect.timeoutFail<Option.Option<E | ModelTimeout>>({ duration, onTimeout })(pull)
      })
    }))
}

/**
 * Fails the stream with `ModelTimeout` when it goes `duration` without a chunk: before the
 * first one, or between two. A stream that keeps producing is never cut, however long it runs.
 * This is `Stream.timeoutFail`, which times each pull of the stream.
 *
 * @since 0.1.0
 * @category combinators
 */
export const betweenChunks = (
  options: Options
): <A, E, R>(self: Stream.Stream<A, E, R>) => Stream.Stream<A, E | ModelTimeout, R> => {
  const duration = Duration.decode(options.duration)
  if (!Duration.isFinite(duration)) return (self) => self
  return Stream.timeoutFail(() => new ModelTimeout({ model: options.model, timeout: duration }), duration)
}

/** Now in milliseconds on `clock`'s monotonic time line (`currentTimeMillis` follows the wall clock, which jumps). */
const nowMillis = (clock: Clock.Clock): number => Number(clock.unsafeCurrentTimeNanos()) / 1_000_000

/** One call in flight: its attempt, who to interrupt it as, and its place in the deadline queue. */
interface Entry {
  readonly fiber: Fiber.RuntimeFiber<unknown, unknown>
  readonly caller: FiberId.FiberId
  readonly deadline: number
  prev: Entry | undefined
  next: Entry | undefined
  queued: boolean
  timedOut: boolean
}

/** The fiber that sleeps until the earliest deadline, on the Clock of the calls it serves. */
interface TimerFiber {
  readonly clock: Clock.Clock
  fiber: Fiber.RuntimeFiber<void> | undefined
  /** When it next reads the queue; `-Infinity` until it has gone to sleep. */
  wakesAt: number
}

/**
 * The calls in flight of one `attempt` instance, in order of deadline, and the one timer fiber
 * that interrupts them when their time is up. Calls share a duration, so a new deadline is
 * almost always the latest: it is inserted from the tail, in O(1).
 */
class Deadlines {
  private head: Entry | undefined = undefined
  private tail: Entry | undefined = undefined
  private timer: TimerFiber | undefined = undefined
  private idleCheckScheduled = false

  /** A call on `clock` can be queued unless the timer sleeps on another Clock for other calls. */
  serves(clock: Clock.Clock): boolean {
    return this.timer === undefined || this.timer.clock === clock || this.head === undefined
  }

  add(fiber: Fiber.RuntimeFiber<unknown, unknown>, caller: FiberId.FiberId, deadline: number): Entry {
    let prev = this.tail
    while (prev !== undefined && prev.deadline > deadline) prev = prev.prev
    const next = prev === undefined ? this.head : prev.next
    const entry: Entry = { fiber, caller, deadline, prev, next, queued: true, timedOut: false }
    if (prev === undefined) this.head = entry
    else prev.next = entry
    if (next === undefined) this.tail = entry
    else next.prev = entry
    return entry
  }

  /**
   * Takes a finished call out of the queue. When the queue empties, the timer is stopped on
   * the scheduler's next round unless a call has come in by then: back-to-back calls keep one
   * timer, and an idle instance holds no pending sleep (which would keep Node running).
   */
  remove(entry: Entry, scheduler: Scheduler.Scheduler): void {
    if (entry.queued) this.unlink(entry)
    if (this.head === undefined && this.timer !== undefined && !this.idleCheckScheduled) {
      this.idleCheckScheduled = true
      scheduler.scheduleTask(this.idleCheck, 0)
    }
  }

  /** The effect that starts a timer for `entry`, or `undefined` when the running one will wake in time. */
  timerFor(clock: Clock.Clock, entry: Entry): Effect.Effect<void> | undefined {
    const running = this.timer
    if (running !== undefined) {
      if (running.clock === clock && running.wakesAt <= entry.deadline) return undefined
      this.stop(running)
    }
    const timer: TimerFiber = { clock, fiber: undefined, wakesAt: -Infinity }
    this.timer = timer
    return Effect.asVoid(Effect.forkDaemon(Effect.interruptible(this.run(timer))))
  }

  private unlink(entry: Entry): void {
    entry.queued = false
    if (entry.prev === undefined) this.head = entry.next
    else entry.prev.next = entry.next
    if (entry.next === undefined) this.tail = entry.prev
    else entry.next.prev = entry.prev
  }

  private readonly idleCheck = (): void => {
    this.idleCheckScheduled = false
    if (this.head === undefined && this.timer !== undefined) this.stop(this.timer)
  }

  /** Retires `timer`: it ends at its next step, and its sleep is interrupted now if it has one. */
  private stop(timer: TimerFiber): void {
    this.timer = undefined
    timer.fiber?.unsafeInterruptAsFork(timer.fiber.id())
  }

  /**
   * Sleeps until the earliest deadline, then interrupts every call whose time is up (without
   * waiting: each caller awaits its own attempt), until the queue is empty or it is retired.
   */
  private run(timer: TimerFiber): Effect.Effect<void> {
    const step: Effect.Effect<void> = Effect.suspend(() => {
      if (this.timer !== timer) return Effect.void
      const now = nowMillis(timer.clock)
      while (this.head !== undefined && this.head.deadline <= now) {
        const entry = this.head
        this.unlink(entry)
        // An attempt that has already ended keeps its result, as in a race it won.
        if (entry.fiber.unsafePoll() === null) {
          entry.timedOut = true
          entry.fiber.unsafeInterruptAsFork(entry.caller)
        }
      }
      if (this.head === undefined) {
        this.timer = undefined
        return Effect.void
      }
      timer.wakesAt = this.head.deadline
      // TestClock floors its nanosecond time: the sleep must move its (millisecond) instant.
      const sleep = durationUntil(now, this.head.deadline, timer.clock.unsafeCurrentTimeMillis())
      return Effect.zipRight(timer.clock.sleep(sleep), step)
    })
    return Effect.withFiberRuntime((fiber) => {
      timer.fiber = fiber
      return step
    })
  }
}
