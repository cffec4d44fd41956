/**
 * The agent's event bus: publishers put {@link AgentEvent.AgentEvent}s on it, subscribers read
 * them as a scoped `Stream` or handle them with a typed `on(tag, handler)`, and
 * {@link EventBus.Service.emitAndAwait} waits for every handler and reports each one's outcome.
 *
 * Fixes the seed's `AgentEventBus` and `AsyncEventEmitter` (seed bug 7): Node's `EventEmitter`
 * runs listeners synchronously inside `emit`, so one throwing listener breaks the emitter and
 * a slow one stalls it; `emitAsync` rejects on the first failure while the other listeners keep
 * running, and nobody learns how they ended. Here:
 *
 * - **every subscriber is isolated**: it has its own bounded buffer and reads it in its own
 *   fiber. A slow, stalled or failing subscriber never blocks the publisher or delays another
 *   subscriber (unless it chose `strategy: "suspend"`, which is exactly "slow my publisher down
 *   rather than lose events"). A handler that fails or dies is logged and counted, and handles
 *   the next event.
 * - **bounded buffers, strategy by option**: `sliding` (drop the oldest, the default: a
 *   subscriber that falls behind sees the latest events), `dropping` (drop the newest), or
 *   `suspend` (the publisher waits for room). Dropped events are counted exactly, per
 *   subscriber (`dropped`) and for the whole bus.
 * - **`emitAndAwait(event)`** delivers the event like `publish`, then waits until every handler
 *   subscribed to it has handled it (in order after the events before it) and answers one
 *   {@link Outcome} per handler: `Handled`, `Failed` (with the cause), `Dropped` (its buffer
 *   dropped the event) or `TimedOut` (with the `timeout` option).
 * - **cheap when nobody listens**: `publish` with no subscriber is one `Effect.suspend` and a
 *   length check; {@link EventBus.Service.wants} and {@link EventBus.Service.hasSubscribers}
 *   answer synchronously without allocating, so a publisher builds an event only when someone
 *   will read it (`if (bus.wants("RetryScheduled")) bus.unsafePublish(new RetryScheduled(...))`).
 * - **synchronous publish**: {@link EventBus.Service.unsafePublish} delivers before it returns,
 *   so a circuit breaker's transition hook (synchronous, inside the call that caused it) puts the
 *   transition on the bus in order with that call's other events. It never suspends: to a
 *   `suspend` subscriber whose buffer is full it queues the event behind the publishers already
 *   waiting (over the bound, never lost, never out of order).
 *
 * Why not one Effect `PubSub`: its strategy belongs to the hub, not to a subscriber (a full
 * `dropping` PubSub drops the event for *every* subscriber, and a `bounded` one lets the slowest
 * subscriber suspend every publisher), it counts nothing it drops, and it cannot take an event
 * synchronously when full. `AgentService` used an unbounded PubSub, whose slow subscriber grows
 * memory without bound. Each subscriber here has a small ring buffer (plain mutable state inside
 * `Effect.sync`/`suspend`), and its reader is resumed once per batch.
 *
 * When the bus's scope closes, subscribers read what is buffered and their streams end.
 *
 * @example
 * ```ts
 * import { Effect, Stream } from "effect"
 * import { AgentEvent, EventBus } from "wiz-effect"
 *
 * const program = Effect.gen(function* () {
 *   const bus = yield* EventBus.EventBus
 *   // a handler that throws does not stop the others, nor the publisher
 *   yield* bus.on("TaskFinished", (event) => Effect.log(`${event.taskId}: ${event.status}`))
 *   const events = yield* bus.subscribe({ capacity: 256, strategy: "dropping" })
 *   yield* bus.publish(new AgentEvent.TaskStarted({ taskId: "t1" }))
 *   const outcomes = yield* bus.emitAndAwait(
 *     new AgentEvent.TaskFinished({ taskId: "t1", status: "succeeded", attempts: 1, durationMs: 12 })
 *   )
 *   // outcomes: [{ _tag: "Handled", handler: "TaskFinished#1" }]
 * }).pipe(Effect.scoped, Effect.provide(EventBus.layer()))
 * ```
 *
 * @since 0.1.0
 */
import { Cause, Chunk, Context, Data, Effect, Layer, Option, Stream } from "effect"
import type { Config, ConfigError, Duration, Scope } from "effect"
import type * as AgentEvent from "./AgentEvent.js"

// -----------------------------------------------------------------------------
// options
// -----------------------------------------------------------------------------

/**
 * What a full buffer does with a new event: `sliding` drops the oldest buffered event,
 * `dropping` drops the new one, `suspend` makes the publisher wait for room.
 *
 * @since 0.1.0
 * @category models
 */
export type Strategy = "sliding" | "dropping" | "suspend"

/**
 * A subscriber's buffer.
 *
 * @since 0.1.0
 * @category models
 */
export interface BufferOptions {
  /** How many events the buffer holds: a positive integer. */
  readonly capacity?: number
  /** What happens to an event that finds the buffer full. */
  readonly strategy?: Strategy
}

/**
 * @since 0.1.0
 * @category models
 */
export interface SubscribeOptions extends BufferOptions {
  /** Only these kinds of event (others are not buffered, nor counted as dropped); all when absent. */
  readonly tags?: ReadonlyArray<AgentEvent.Tag>
}

/**
 * @since 0.1.0
 * @category models
 */
export interface HandlerOptions extends BufferOptions {
  /** The handler's name in outcomes and logs; `Tag#n` by default. */
  readonly name?: string
}

/**
 * The bus's options: the buffer every subscriber gets unless it asks for another.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options extends BufferOptions {}

/**
 * @since 0.1.0
 * @category models
 */
export interface EmitOptions {
  /** Stop waiting after this long; a handler that has not finished by then is `TimedOut`. */
  readonly timeout?: Duration.DurationInput
}

/**
 * `capacity: 1024`: enough to ride out a burst (a thousand tasks starting at once) without a
 * drop, small enough (a few KB per subscriber) to stay bounded. `strategy: "sliding"`: a
 * subscriber that falls behind loses its oldest events and keeps the newest, and never slows
 * the agent; ask for `"suspend"` where every event must arrive (an audit log, a summary).
 *
 * @since 0.1.0
 * @category defaults
 */
export const defaults = {
  capacity: 1024,
  strategy: "sliding"
} as const satisfies Required<BufferOptions>

// -----------------------------------------------------------------------------
// models
// -----------------------------------------------------------------------------

/**
 * How one handler ended on an event given to `emitAndAwait`.
 *
 * @since 0.1.0
 * @category models
 */
export type Outcome = Data.TaggedEnum<{
  /** The handler succeeded. */
  Handled: { readonly handler: string }
  /** The handler failed or died. */
  Failed: { readonly handler: string; readonly cause: Cause.Cause<unknown> }
  /** The handler's buffer dropped the event, or the handler left before it got to it. */
  Dropped: { readonly handler: string }
  /** The handler had not finished when `timeout` ran out. */
  TimedOut: { readonly handler: string }
}>

/**
 * Constructors and matchers for {@link Outcome}.
 *
 * @since 0.1.0
 * @category models
 */
export const Outcome = Data.taggedEnum<Outcome>()

/**
 * A subscriber: its events, and what its buffer dropped.
 *
 * @since 0.1.0
 * @category models
 */
export interface Subscription {
  /** The events, from the moment of subscribing; it ends when the bus shuts down. */
  readonly stream: Stream.Stream<AgentEvent.AgentEvent>
  /** Events this subscriber's buffer dropped. */
  readonly dropped: Effect.Effect<number>
  /** Events buffered, not read yet. */
  readonly buffered: Effect.Effect<number>
}

/**
 * A running handler's counters.
 *
 * @since 0.1.0
 * @category models
 */
export interface Handler {
  readonly name: string
  /** Events handled successfully. */
  readonly handled: Effect.Effect<number>
  /** Events on which the handler failed or died. */
  readonly failures: Effect.Effect<number>
  /** Events its buffer dropped. */
  readonly dropped: Effect.Effect<number>
}

/**
 * The bus as a service.
 *
 * @since 0.1.0
 * @category tags
 */
export class EventBus extends Context.Tag("wiz-effect/EventBus")<EventBus, EventBus.Service>() {}

/**
 * @since 0.1.0
 */
export declare namespace EventBus {
  /**
   * @since 0.1.0
   * @category models
   */
  export interface Service {
    /**
     * Deliver `event` to every subscriber that wants it. Completes at once, unless a `suspend`
     * subscriber's buffer is full: then it waits for room there (having delivered to the others).
     */
    readonly publish: (event: AgentEvent.AgentEvent) => Effect.Effect<void>
    /**
     * Deliver `event` now, synchronously, never waiting: for hooks that cannot run an effect (a
     * breaker's transition). A full `suspend` buffer keeps the event beyond its capacity.
     */
    readonly unsafePublish: (event: AgentEvent.AgentEvent) => void
    /** Whether anyone subscribes now. Synchronous, allocates nothing. */
    readonly hasSubscribers: () => boolean
    /** Whether an event with this tag would reach anyone now. Synchronous, allocates nothing. */
    readonly wants: (tag: AgentEvent.Tag) => boolean
    /** Subscribe now, in a scope: the stream has every event (that its buffer keeps) from this point on. */
    readonly subscribe: (options?: SubscribeOptions) => Effect.Effect<Stream.Stream<AgentEvent.AgentEvent>, never, Scope.Scope>
    /** {@link subscribe}, with the subscriber's drop count. */
    readonly subscription: (options?: SubscribeOptions) => Effect.Effect<Subscription, never, Scope.Scope>
    /** The events from when the stream is run (it subscribes then, in the stream's scope). */
    readonly events: Stream.Stream<AgentEvent.AgentEvent>
    /**
     * Run `handler` on every event with this tag (or tags), one at a time in order, in its own
     * fiber, until the scope closes. A failure or defect is logged and counted; the next event
     * is handled as usual.
     */
    readonly on: <T extends AgentEvent.Tag, E, R>(
      tag: T | ReadonlyArray<T>,
      handler: (event: AgentEvent.Of<T>) => Effect.Effect<void, E, R>,
      options?: HandlerOptions
    ) => Effect.Effect<Handler, never, Scope.Scope | R>
    /**
     * Deliver `event` like `publish`, then wait until every handler of its tag has handled it,
     * and answer each handler's {@link Outcome}, failures included, in subscription order.
     */
    readonly emitAndAwait: (event: AgentEvent.AgentEvent, options?: EmitOptions) => Effect.Effect<ReadonlyArray<Outcome>>
    /** Events dropped so far, by every subscriber (those gone included). */
    readonly dropped: Effect.Effect<number>
  }
}

// -----------------------------------------------------------------------------
// constructors
// -----------------------------------------------------------------------------

/**
 * A new bus with no subscribers. When the scope closes, every subscriber reads what its buffer
 * holds and its stream ends. A capacity that is not a positive integer is a defect (`RangeError`).
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Effect.Effect<EventBus.Service, never, Scope.Scope> =>
  Effect.flatMap(
    Effect.sync(() => new Bus(resolveBuffer(options, defaults))),
    (bus) => Effect.as(Effect.addFinalizer(() => Effect.sync(() => bus.shutdown())), bus.service)
  )

/**
 * The bus as a layer.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<EventBus> => Layer.scoped(EventBus, make(options))

/**
 * The bus as a layer, its options read from `Config` (e.g.
 * `Config.all({ capacity: Config.integer("EVENTS_CAPACITY") })`).
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (config: Config.Config<Options>): Layer.Layer<EventBus, ConfigError.ConfigError> =>
  Layer.scoped(EventBus, Effect.flatMap(config, make))

// -----------------------------------------------------------------------------
// internal
// -----------------------------------------------------------------------------

const resolveBuffer = (options: BufferOptions, fallback: Required<BufferOptions>): Required<BufferOptions> => {
  const capacity = options.capacity ?? fallback.capacity
  const strategy = options.strategy ?? fallback.strategy
  if (!(Number.isInteger(capacity) && capacity >= 1)) {
    throw new RangeError(`EventBus: capacity must be a positive integer (got ${capacity})`)
  }
  if (strategy !== "sliding" && strategy !== "dropping" && strategy !== "suspend") {
    throw new RangeError(`EventBus: strategy must be "sliding", "dropping" or "suspend" (got ${String(strategy)})`)
  }
  return { capacity, strategy }
}

/** What `emitAndAwait` waits on for one handler. */
interface Ack {
  readonly handler: string
  outcome: Outcome | undefined
  onSettled: (() => void) | undefined
}

const settle = (ack: Ack | undefined, outcome: Outcome): void => {
  if (ack === undefined || ack.outcome !== undefined) return
  ack.outcome = outcome
  const onSettled = ack.onSettled
  ack.onSettled = undefined
  onSettled?.()
}

/** An event waiting for room in a full `suspend` buffer, with its publisher (none when forced). */
interface Waiting {
  readonly event: AgentEvent.AgentEvent
  readonly ack: Ack | undefined
  readonly resume: ((effect: Effect.Effect<void>) => void) | undefined
  cancelled: boolean
}

const initialRing = 16

/**
 * One subscriber's buffer: a ring of at most `capacity` events (grown on demand), the events
 * waiting for room behind it (`suspend` only), and the one reader waiting for events.
 */
class Subscriber {
  private ring: Array<AgentEvent.AgentEvent | undefined>
  private acks: Array<Ack | undefined> | undefined
  private head = 0
  size = 0
  private waiting: Array<Waiting> = []
  private waitingHead = 0
  dropped = 0
  /** Set by the bus when it shuts down: nothing more arrives; the reader drains and ends. */
  ended = false
  /** Set when the subscriber leaves: nothing more is accepted. */
  closed = false
  private reader: (() => void) | undefined = undefined

  constructor(
    readonly capacity: number,
    readonly strategy: Strategy,
    readonly tags: ReadonlySet<string> | undefined,
    /** A handler's name: its events carry acks for `emitAndAwait`. */
    readonly handler: string | undefined
  ) {
    this.ring = new Array(Math.min(capacity, initialRing))
    this.acks = handler === undefined ? undefined : new Array(this.ring.length)
  }

  accepts(tag: string): boolean {
    return this.tags === undefined || this.tags.has(tag)
  }

  /** Takes `event` (or drops it, counted); `false` when a `suspend` buffer is full and the publisher must wait. */
  offer(event: AgentEvent.AgentEvent, ack: Ack | undefined): boolean {
    if (this.closed) {
      if (ack !== undefined) settle(ack, Outcome.Dropped({ handler: ack.handler }))
      return true
    }
    if (this.size < this.capacity && this.waitingHead === this.waiting.length) {
      this.push(event, ack)
      this.wake()
      return true
    }
    switch (this.strategy) {
      case "dropping":
        this.dropped++
        if (ack !== undefined) settle(ack, Outcome.Dropped({ handler: ack.handler }))
        return true
      case "sliding": {
        const evicted = this.acks?.[this.head]
        this.ring[this.head] = undefined
        if (this.acks !== undefined) this.acks[this.head] = undefined
        this.head = (this.head + 1) % this.ring.length
        this.size--
        this.dropped++
        if (evicted !== undefined) settle(evicted, Outcome.Dropped({ handler: evicted.handler }))
        this.push(event, ack)
        this.wake()
        return true
      }
      case "suspend":
        return false
    }
  }

  /** {@link offer}, but never waits: a full `suspend` buffer queues the event behind the waiting publishers. */
  force(event: AgentEvent.AgentEvent): void {
    if (!this.offer(event, undefined)) this.waiting.push({ event, ack: undefined, resume: undefined, cancelled: false })
  }

  /** Waits until `event` is in the buffer (a full `suspend` buffer); interrupting the wait withdraws it. */
  wait(event: AgentEvent.AgentEvent, ack: Ack | undefined): Effect.Effect<void> {
    return Effect.async<void>((resume) => {
      if (this.offer(event, ack)) return resume(Effect.void)
      const entry: Waiting = { event, ack, resume, cancelled: false }
      this.waiting.push(entry)
      return Effect.sync(() => {
        entry.cancelled = true
      })
    })
  }

  /** Everything buffered, in order, or `undefined` when empty. */
  takeAll(): Chunk.Chunk<AgentEvent.AgentEvent> | undefined {
    if (this.size === 0) return undefined
    const out = new Array<AgentEvent.AgentEvent>(this.size)
    const length = this.ring.length
    for (let i = 0; i < this.size; i++) {
      const at = (this.head + i) % length
      out[i] = this.ring[at]!
      this.ring[at] = undefined
    }
    this.head = 0
    this.size = 0
    this.refill()
    return Chunk.unsafeFromArray(out)
  }

  /** The oldest buffered event and its ack, or `undefined` when empty. */
  takeOne(): readonly [AgentEvent.AgentEvent, Ack | undefined] | undefined {
    if (this.size === 0) return undefined
    const event = this.ring[this.head]!
    const ack = this.acks?.[this.head]
    this.ring[this.head] = undefined
    if (this.acks !== undefined) this.acks[this.head] = undefined
    this.head = (this.head + 1) % this.ring.length
    this.size--
    this.refill()
    return [event, ack]
  }

  /** Waits until an event arrives or the subscriber ends. */
  readonly awaitEvent: Effect.Effect<void> = Effect.async<void>((resume) => {
    if (this.size > 0 || this.ended || this.closed) return resume(Effect.void)
    this.reader = () => resume(Effect.void)
    return Effect.sync(() => {
      this.reader = undefined
    })
  })

  /** No more events will come: the reader drains the buffer and ends. */
  end(): void {
    this.ended = true
    this.wake()
  }

  /** The subscriber left: release waiting publishers, and report its unhandled events as dropped. */
  close(): void {
    this.closed = true
    for (let i = this.waitingHead; i < this.waiting.length; i++) {
      const entry = this.waiting[i]!
      if (entry.cancelled) continue
      if (entry.ack !== undefined) settle(entry.ack, Outcome.Dropped({ handler: entry.ack.handler }))
      entry.resume?.(Effect.void)
    }
    this.waiting = []
    this.waitingHead = 0
    if (this.acks !== undefined) {
      for (const ack of this.acks) if (ack !== undefined) settle(ack, Outcome.Dropped({ handler: ack.handler }))
    }
    this.wake()
  }

  private push(event: AgentEvent.AgentEvent, ack: Ack | undefined): void {
    if (this.size === this.ring.length) this.grow()
    const at = (this.head + this.size) % this.ring.length
    this.ring[at] = event
    if (this.acks !== undefined) this.acks[at] = ack
    this.size++
  }

  /** Doubles the ring (up to `capacity`), unrolled so the oldest event is at 0. */
  private grow(): void {
    const length = this.ring.length
    const next = Math.min(this.capacity, length * 2)
    const ring = new Array<AgentEvent.AgentEvent | undefined>(next)
    const acks = this.acks === undefined ? undefined : new Array<Ack | undefined>(next)
    for (let i = 0; i < this.size; i++) {
      ring[i] = this.ring[(this.head + i) % length]
      if (acks !== undefined) acks[i] = this.acks![(this.head + i) % length]
    }
    this.ring = ring
    this.acks = acks
    this.head = 0
  }

  /** Moves waiting events into the room a take made, resuming their publishers, in order. */
  private refill(): void {
    while (this.size < this.capacity && this.waitingHead < this.waiting.length) {
      const entry = this.waiting[this.waitingHead++]!
      if (entry.cancelled) continue
      this.push(entry.event, entry.ack)
      entry.resume?.(Effect.void)
    }
    if (this.waitingHead === this.waiting.length && this.waitingHead > 0) {
      this.waiting = []
      this.waitingHead = 0
    }
  }

  private wake(): void {
    const reader = this.reader
    if (reader !== undefined) {
      this.reader = undefined
      reader()
    }
  }
}

class Bus {
  /** Replaced, never mutated, so a publish loop is never disturbed by a subscriber leaving. */
  private subscribers: ReadonlyArray<Subscriber> = []
  /** Subscribers that take every tag, and those per tag, for `wants`. */
  private everyTag = 0
  private readonly perTag = new Map<string, number>()
  private droppedByGone = 0
  private isShutdown = false
  private handlers = 0

  constructor(private readonly buffer: Required<BufferOptions>) {}

  shutdown(): void {
    this.isShutdown = true
    for (const subscriber of this.subscribers) subscriber.end()
  }

  private add(subscriber: Subscriber): void {
    if (this.isShutdown) subscriber.end()
    this.subscribers = [...this.subscribers, subscriber]
    this.count(subscriber, 1)
  }

  private remove(subscriber: Subscriber): void {
    const index = this.subscribers.indexOf(subscriber)
    if (index < 0) return
    this.subscribers = [...this.subscribers.slice(0, index), ...this.subscribers.slice(index + 1)]
    this.count(subscriber, -1)
    subscriber.close()
    this.droppedByGone += subscriber.dropped
  }

  private count(subscriber: Subscriber, delta: 1 | -1): void {
    if (subscriber.tags === undefined) {
      this.everyTag += delta
      return
    }
    for (const tag of subscriber.tags) this.perTag.set(tag, (this.perTag.get(tag) ?? 0) + delta)
  }

  private readonly acquire = (
    options: SubscribeOptions,
    handler: string | undefined
  ): Effect.Effect<Subscriber, never, Scope.Scope> =>
    Effect.acquireRelease(
      Effect.sync(() => {
        const { capacity, strategy } = resolveBuffer(options, this.buffer)
        const subscriber = new Subscriber(
          capacity,
          strategy,
          options.tags === undefined ? undefined : new Set(options.tags),
          handler
        )
        this.add(subscriber)
        return subscriber
      }),
      (subscriber) => Effect.sync(() => this.remove(subscriber))
    )

  private readonly publish = (event: AgentEvent.AgentEvent): Effect.Effect<void> =>
    Effect.suspend(() => {
      const subscribers = this.subscribers
      let waits: Array<Effect.Effect<void>> | undefined
      for (let i = 0; i < subscribers.length; i++) {
        const subscriber = subscribers[i]!
        if (subscriber.accepts(event._tag) && !subscriber.offer(event, undefined)) {
          ;(waits ??= []).push(subscriber.wait(event, undefined))
        }
      }
      return waits === undefined ? Effect.void : Effect.all(waits, { discard: true })
    })

  private readonly unsafePublish = (event: AgentEvent.AgentEvent): void => {
    const subscribers = this.subscribers
    for (let i = 0; i < subscribers.length; i++) {
      const subscriber = subscribers[i]!
      if (subscriber.accepts(event._tag)) subscriber.force(event)
    }
  }

  private readonly subscription = (options: SubscribeOptions = {}): Effect.Effect<Subscription, never, Scope.Scope> =>
    Effect.map(this.acquire(options, undefined), (subscriber): Subscription => {
      const pull: Effect.Effect<Chunk.Chunk<AgentEvent.AgentEvent>, Option.Option<never>> = Effect.suspend(() => {
        const events = subscriber.takeAll()
        if (events !== undefined) return Effect.succeed(events)
        if (subscriber.ended || subscriber.closed) return Effect.fail(Option.none())
        return Effect.zipRight(subscriber.awaitEvent, pull)
      })
      return {
        stream: Stream.repeatEffectChunkOption(pull),
        dropped: Effect.sync(() => subscriber.dropped),
        buffered: Effect.sync(() => subscriber.size)
      }
    })

  private readonly on = <T extends AgentEvent.Tag, E, R>(
    tag: T | ReadonlyArray<T>,
    handler: (event: AgentEvent.Of<T>) => Effect.Effect<void, E, R>,
    options: HandlerOptions = {}
  ): Effect.Effect<Handler, never, Scope.Scope | R> =>
    Effect.suspend(() => {
      const tags: ReadonlyArray<T> = typeof tag === "string" ? [tag as T] : tag as ReadonlyArray<T>
      const name = options.name ?? `${tags.join("|")}#${++this.handlers}`
      const subscribeOptions: SubscribeOptions = { ...options, tags }
      return Effect.flatMap(this.acquire(subscribeOptions, name), (subscriber) => {
        let handled = 0
        let failures = 0
        const loop: Effect.Effect<void, never, R> = Effect.suspend(() => {
          const next = subscriber.takeOne()
          if (next === undefined) {
            return subscriber.ended || subscriber.closed ? Effect.void : Effect.zipRight(subscriber.awaitEvent, loop)
          }
          const [event, ack] = next
          const handling = Effect.onInterrupt(
            Effect.suspend(() => handler(event as AgentEvent.Of<T>)),
            () => Effect.sync(() => settle(ack, Outcome.Dropped({ handler: name })))
          )
          return Effect.matchCauseEffect(handling, {
            onSuccess: () => {
              handled++
              settle(ack, Outcome.Handled({ handler: name }))
              return loop
            },
            onFailure: (cause) => {
              // The handler's own fiber is being interrupted (its scope closed): stop here.
              if (Cause.isInterruptedOnly(cause)) return Effect.interrupt
              failures++
              settle(ack, Outcome.Failed({ handler: name, cause }))
              return Effect.zipRight(
                Effect.logWarning(`EventBus: handler ${name} failed on ${event._tag}`, cause),
                loop
              )
            }
          })
        })
        return Effect.as(Effect.forkScoped(loop), {
          name,
          handled: Effect.sync(() => handled),
          failures: Effect.sync(() => failures),
          dropped: Effect.sync(() => subscriber.dropped)
        })
      })
    })

  private readonly emitAndAwait = (
    event: AgentEvent.AgentEvent,
    options: EmitOptions = {}
  ): Effect.Effect<ReadonlyArray<Outcome>> =>
    Effect.suspend(() => {
      const subscribers = this.subscribers
      const acks: Array<Ack> = []
      let waits: Array<Effect.Effect<void>> | undefined
      for (let i = 0; i < subscribers.length; i++) {
        const subscriber = subscribers[i]!
        if (!subscriber.accepts(event._tag)) continue
        let ack: Ack | undefined
        if (subscriber.handler !== undefined) {
          ack = { handler: subscriber.handler, outcome: undefined, onSettled: undefined }
          acks.push(ack)
        }
        if (!subscriber.offer(event, ack)) (waits ??= []).push(subscriber.wait(event, ack))
      }
      const delivered = waits === undefined ? Effect.void : Effect.all(waits, { discard: true })
      const settled = Effect.async<void>((resume) => {
        let left = 0
        const done = () => {
          if (--left === 0) resume(Effect.void)
        }
        for (const ack of acks) {
          if (ack.outcome === undefined) {
            left++
            ack.onSettled = done
          }
        }
        if (left === 0) return resume(Effect.void)
        return Effect.sync(() => {
          for (const ack of acks) ack.onSettled = undefined
        })
      })
      const all = Effect.zipRight(delivered, settled)
      const waited = options.timeout === undefined ? all : Effect.ignore(Effect.timeout(all, options.timeout))
      return Effect.as(waited, acks).pipe(
        Effect.map((acks) => acks.map((ack) => ack.outcome ?? Outcome.TimedOut({ handler: ack.handler })))
      )
    })

  readonly service: EventBus.Service = {
    publish: this.publish,
    unsafePublish: this.unsafePublish,
    hasSubscribers: () => this.subscribers.length > 0,
    wants: (tag) => this.everyTag > 0 || (this.perTag.get(tag) ?? 0) > 0,
    subscribe: (options) => Effect.map(this.subscription(options), (subscription) => subscription.stream),
    subscription: this.subscription,
    events: Stream.unwrapScoped(Effect.map(this.subscription(), (subscription) => subscription.stream)),
    on: this.on,
    emitAndAwait: this.emitAndAwait,
    dropped: Effect.sync(() => {
      let dropped = this.droppedByGone
      for (const subscriber of this.subscribers) dropped += subscriber.dropped
      return dropped
    })
  }
}
