/**
 * Request coalescing: callers that ask for the same key while a call for it is in flight share
 * that one call instead of starting their own. Every waiter receives the same outcome; once the
 * call has ended nothing is remembered (a failure is never handed to a later caller: that is
 * `Memo`'s job, with a time-to-live). A waiter that is interrupted leaves on its own and the
 * others keep waiting; when the *last* waiter leaves, the shared call is interrupted, and that
 * last waiter returns once it has stopped. The seed's `RequestCoalescer` (a `Map` of promises)
 * let the call run on after everyone had gone (seed bug 11).
 *
 * Each caller can learn how it took part: `share` answers with the call's `Exit`, whether this
 * caller `led` or `joined` the call, and how many callers the call served, so a task's record
 * can say it shared a model call.
 *
 * **Why not Effect's `Request`/`RequestResolver` or `Cache`.** Both were read and measured
 * (effect 3.22, `npm run bench`, node 20):
 * - `Effect.request` with a request cache does reference-count its waiters
 *   (`invokeWithInterrupt` interrupts the resolver when every listener count is zero), but the
 *   fiber that first made the request keeps waiting *uninterruptibly* for the shared call once
 *   another fiber has joined it: interrupting the first caller, or putting a timeout on it,
 *   returns only when the whole call has finished. Each uncached request also forks two or three
 *   fibers (the blocked-request runner, `invokeWithInterrupt`'s processing fiber, and
 *   `fromEffect`'s `forEach`), and a completed entry stays in the request cache, so coalescing
 *   needs an invalidation per call: ~200-400 µs per call on a miss.
 * - `Cache.get` runs the lookup in the first caller's fiber, so interrupting the first caller
 *   interrupts every other waiter of that key (`lookupValueOf`'s `onInterrupt` fails the shared
 *   `Deferred`), and waiters that leave never interrupt anything: no reference count at all.
 *   A completed entry also stays until its time-to-live (~25-40 µs per miss with the
 *   invalidation).
 *
 * So the call runs in a fiber of its own (`forkDaemon`: the one real cost of a miss, ~15-30 µs
 * per call, against ~10-13 µs for a `Map` of `Deferred`s that cannot reference-count and ~1 µs
 * for the seed's `Map` of promises), every caller, the first one included, waits on it and may
 * leave on its own, and the fiber is interrupted exactly when the count of waiters drops to
 * zero. State is a plain `Map` touched in single synchronous steps; a joiner costs one
 * `Effect.async` registration and no `Deferred`. In front of `AgentService.process` (8 tasks at
 * a time, every task a miss) it costs ~1.1-1.4× the process alone.
 * The fiber is a daemon, but it cannot leak: it lives only as long as someone waits on it.
 *
 * Keys are compared the way a `Map` compares them (strings, numbers), except objects that
 * implement Effect's `Equal` (`Data.struct`, `Data.Class`), which are compared by value. Build
 * a string key for requests on the hot path: it is the cheapest to look up.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { AiModel, Coalesce } from "wiz-effect"
 *
 * const program = Effect.gen(function* () {
 *   const model = yield* AiModel.AiModel
 *   const coalesce = yield* Coalesce.make<AiModel.Completion, AiModel.ModelError>()
 *   const ask = (prompt: string) =>
 *     coalesce.share(prompt, model.generate(new AiModel.CompletionRequest({ prompt, maxTokens: 64 })))
 *   // ten identical prompts in flight: one model call, ten answers
 *   const shared = yield* Effect.forEach(Array.from({ length: 10 }, () => "Summarise: ..."), ask, {
 *     concurrency: "unbounded"
 *   })
 *   // shared[0].role === "led", shared[1].role === "joined", shared[i].callers === 10
 * })
 * ```
 *
 * @since 0.1.0
 */
import { Effect, Equal, MutableHashMap, Option } from "effect"
import type { Exit } from "effect"
import { type Done, SharedCall, type WhileJoined } from "../internal/sharedCall.js"

/**
 * Wraps the wait of a caller that joined a call in flight.
 *
 * @since 0.1.0
 * @category models
 */
export type { WhileJoined }

/**
 * How a caller took part in a shared call: it `led` it (its call started it) or `joined` one
 * already in flight.
 *
 * @since 0.1.0
 * @category models
 */
export type Role = "led" | "joined"

/**
 * What `share` answers: the shared call's outcome, this caller's role, and how many callers
 * the call served (those still waiting when it ended, this one included).
 *
 * @since 0.1.0
 * @category models
 */
export interface Shared<A, E> {
  readonly exit: Exit.Exit<A, E>
  readonly role: Role
  readonly callers: number
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Coalesce<A, E, K = string> {
  /**
   * Runs `effect` for `key`, unless a call for an equal key is in flight: then waits for that
   * call's outcome instead. Interrupting this caller leaves the call to the others; interrupting
   * its last waiter interrupts the call, and waits until it has stopped. `whileJoined`, if
   * given, wraps the wait of a caller that joined a call in flight (a caller that waits for
   * someone else's call is idle: `AgentService` counts it asleep, so it holds no place).
   */
  readonly apply: <R>(key: K, effect: Effect.Effect<A, E, R>, whileJoined?: WhileJoined) => Effect.Effect<A, E, R>
  /**
   * As `apply`, but answers with the outcome as an `Exit`, this caller's role and how many
   * callers the call served. Fails only if this caller itself is interrupted.
   */
  readonly share: <R>(key: K, effect: Effect.Effect<A, E, R>, whileJoined?: WhileJoined) => Effect.Effect<Shared<A, E>, never, R>
  /** Keys with a call in flight right now. */
  readonly inFlight: Effect.Effect<number>
}

/** The calls in flight: a `Map` for plain keys, a `MutableHashMap` for keys that implement `Equal`. */
class Calls<A, E, K> {
  private readonly plain = new Map<K, SharedCall<A, E>>()
  private readonly byValue = MutableHashMap.empty<K, SharedCall<A, E>>()
  get(key: K): SharedCall<A, E> | undefined {
    return Equal.isEqual(key) ? Option.getOrUndefined(MutableHashMap.get(this.byValue, key)) : this.plain.get(key)
  }
  set(key: K, call: SharedCall<A, E>): void {
    if (Equal.isEqual(key)) MutableHashMap.set(this.byValue, key, call)
    else this.plain.set(key, call)
  }
  /** Forgets `call`, unless another call for `key` has replaced it already. */
  delete(key: K, call: SharedCall<A, E>): void {
    if (this.get(key) !== call) return
    if (Equal.isEqual(key)) MutableHashMap.remove(this.byValue, key)
    else this.plain.delete(key)
  }
  get size(): number {
    return this.plain.size + MutableHashMap.size(this.byValue)
  }
}

const asEffect = <A, E>(exit: Exit.Exit<A, E>): Effect.Effect<A, E> => exit
const asShared = <A, E>(exit: Exit.Exit<A, E>, role: Role, callers: number): Effect.Effect<Shared<A, E>> =>
  Effect.succeed({ exit, role, callers })

/**
 * A new coalescer with nothing in flight. One instance shares calls among its own callers; the
 * type parameters fix what every call for it returns.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <A, E = never, K = string>(): Effect.Effect<Coalesce<A, E, K>> =>
  Effect.sync(() => {
    const calls = new Calls<A, E, K>()
    const run = <X, Y, R>(
      key: K,
      effect: Effect.Effect<A, E, R>,
      done: Done<A, E, X, Y>,
      whileJoined: WhileJoined | undefined
    ): Effect.Effect<X, Y, R> =>
      Effect.uninterruptibleMask((restore) => {
        const current = calls.get(key)
        if (current !== undefined) return current.join(restore, done, whileJoined)
        const call: SharedCall<A, E> = new SharedCall(() => calls.delete(key, call))
        calls.set(key, call)
        return call.lead(effect, restore, done)
      })
    const coalesce: Coalesce<A, E, K> = {
      apply: (key, effect, whileJoined) => run(key, effect, asEffect, whileJoined),
      share: (key, effect, whileJoined) => run(key, effect, asShared, whileJoined),
      inFlight: Effect.sync(() => calls.size)
    }
    return coalesce
  })
