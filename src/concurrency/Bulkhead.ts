/**
 * A bulkhead: at most `permits` units of work run at once, and callers beyond that wait their
 * turn in strict FIFO order. It has the shape of Effect's `Semaphore` (`withPermits(n)(self)`),
 * so code written against one reads the same against the other.
 *
 * Why not Effect's `Semaphore`: since effect 3.19.19 every release wakes *every* waiting fiber,
 * which re-checks and goes back to sleep. Measured on node 20, 1,000 fibers waiting on 64
 * permits cost ~130 µs per call (599 MB heap), and on 3 permits ~3 ms per call (1.6 GB heap).
 * Here each waiter sits in a linked queue and is resumed exactly once, when a release hands
 * it its permits. Same machine, same load: 1,000 fibers on 3 permits ~70 µs per call (~38 µs
 * of it is forking the fibers at all) against 2.3–3.8 ms with `Semaphore`; uncontended, ~1.5 µs
 * added per call against ~5.4 µs.
 *
 * How it stays cheap and leak-free:
 * - a free permit is taken, and its release installed, in one uninterruptible step, with no
 *   `Ref`, `Deferred` or async step on the way (the uncontended path);
 * - the release handler is allocated once per limiter and request size, not once per call;
 * - a release hands the permits straight to the head waiter; nobody overtakes a waiter, not
 *   even a later caller who asks for fewer permits (no barging, so no starvation of large
 *   requests);
 * - when a waiter ends (interrupted), it looks at its own state: still queued → it unlinks
 *   itself (O(1)); already granted → it passes the permits on. A grant racing an interrupt
 *   therefore loses nothing.
 *
 * Asking for more permits than the bulkhead has could never succeed, so it is a defect (a
 * `RangeError`) rather than a wait that hangs forever.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Bulkhead } from "wiz-effect"
 *
 * const program = Effect.gen(function* () {
 *   const bulkhead = yield* Bulkhead.make({ permits: 8 })
 *   // at most 8 calls on the wire; the other 92 wait in arrival order
 *   return yield* Effect.forEach(prompts, (prompt) => bulkhead.withPermit(callModel(prompt)), {
 *     concurrency: "unbounded"
 *   })
 * })
 * ```
 *
 * @since 0.1.0
 */
import { Effect } from "effect"
import type { Cause, Scope } from "effect"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** How many permits the bulkhead has: a positive integer. */
  readonly permits: number
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Bulkhead {
  /**
   * Runs `self` while holding `n` permits, waiting in FIFO order until they are free. The
   * permits are returned when `self` ends, however it ends. `n` must be an integer between 1
   * and the bulkhead's `permits`; anything else dies with a `RangeError`.
   */
  readonly withPermits: (n: number) => <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  /** `withPermits(1)`. */
  readonly withPermit: <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  /**
   * Takes `n` permits for the rest of the current scope: waits in the same FIFO queue as
   * `withPermits`, and the permits are returned when the scope closes. Use it when the wait
   * alone needs a bound (`Effect.timeoutFail(bulkhead.takePermits(1), ...)`), or when the
   * permits must be held across steps that are not one effect. Interrupted while waiting, it
   * leaves the queue; if the permits were handed to it meanwhile, they go back (or were already
   * added to the scope).
   */
  readonly takePermits: (n: number) => Effect.Effect<void, never, Scope.Scope>
  /** Permits free right now. */
  readonly available: Effect.Effect<number>
  /** Callers waiting for permits right now. */
  readonly waiting: Effect.Effect<number>
}

/** A caller waiting for permits: a node of the FIFO queue. */
class Waiter {
  prev: Waiter | undefined = undefined
  next: Waiter | undefined = undefined
  /** Set by `release` when the permits were handed over (and the waiter unlinked). */
  granted = false
  resume: ((effect: Effect.Effect<void>) => void) | undefined = undefined
  constructor(readonly permits: number) {}
}

/**
 * A new bulkhead with all its permits free. `permits` must be a positive integer; anything
 * else is a defect (`RangeError`).
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options): Effect.Effect<Bulkhead> =>
  Effect.sync(() => {
    const permits = options.permits
    if (!(Number.isInteger(permits) && permits >= 1)) {
      throw new RangeError(`Bulkhead: permits must be a positive integer (got ${permits})`)
    }
    let free = permits
    let waiting = 0
    let head: Waiter | undefined = undefined
    let tail: Waiter | undefined = undefined

    const enqueue = (n: number): Waiter => {
      const waiter = new Waiter(n)
      waiter.prev = tail
      if (tail === undefined) head = waiter
      else tail.next = waiter
      tail = waiter
      waiting++
      return waiter
    }

    const unlink = (waiter: Waiter): void => {
      if (waiter.prev === undefined) head = waiter.next
      else waiter.prev.next = waiter.next
      if (waiter.next === undefined) tail = waiter.prev
      else waiter.next.prev = waiter.prev
      waiter.prev = waiter.next = undefined
      waiting--
    }

    // Returns `n` permits, then grants the queue from its head while the head's request fits.
    const release = (n: number): void => {
      free += n
      while (head !== undefined && head.permits <= free) {
        const waiter = head
        free -= waiter.permits
        unlink(waiter)
        waiter.granted = true
        waiter.resume?.(Effect.void)
      }
    }

    // Resumes once `release` has handed the waiter its permits.
    const grantOf = (waiter: Waiter): Effect.Effect<void> =>
      Effect.async<void>((resume) => {
        if (waiter.granted) resume(Effect.void)
        else waiter.resume = resume
      })

    // Only interruption ends a wait early: pass on what the waiter was given, or leave the queue
    // and let whoever is now at its head take the permits that are free.
    const abandon = (waiter: Waiter): void => {
      if (waiter.granted) release(waiter.permits)
      else {
        unlink(waiter)
        release(0)
      }
    }

    type WithPermits = <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>

    const makeWithPermits = (n: number): WithPermits => {
      const releasing = {
        onFailure: <E>(cause: Cause.Cause<E>): Effect.Effect<never, E> => {
          release(n)
          return Effect.failCause(cause)
        },
        onSuccess: <A>(a: A): Effect.Effect<A> => {
          release(n)
          return Effect.succeed(a)
        }
      }
      // TypeScript cannot infer through the generic handlers, hence the explicit type arguments.
      const releaseOnExit = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
        Effect.matchCauseEffect<A, E, R, never, E, never, A, never, never>(effect, releasing)
      return <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
        Effect.uninterruptibleMask((restore) => {
          if (head === undefined && free >= n) {
            free -= n
            return releaseOnExit(restore(self))
          }
          const waiter = enqueue(n)
          return Effect.matchCauseEffect(restore(grantOf(waiter)), {
            onFailure: (cause) => {
              abandon(waiter)
              return Effect.failCause(cause)
            },
            onSuccess: () => releaseOnExit(restore(self))
          })
        })
    }

    // One combinator (and so one release handler) per size, built on first use.
    const bySize: Array<WithPermits> = []
    const withPermits = (n: number): WithPermits => {
      if (!(Number.isInteger(n) && n >= 1 && n <= permits)) {
        return () => Effect.die(new RangeError(`Bulkhead: cannot take ${n} permits of ${permits}`))
      }
      return bySize[n] ??= makeWithPermits(n)
    }

    const takePermits = (n: number): Effect.Effect<void, never, Scope.Scope> => {
      if (!(Number.isInteger(n) && n >= 1 && n <= permits)) {
        return Effect.die(new RangeError(`Bulkhead: cannot take ${n} permits of ${permits}`))
      }
      const hold = Effect.asVoid(Effect.addFinalizer(() => Effect.sync(() => release(n))))
      return Effect.uninterruptibleMask((restore) => {
        if (head === undefined && free >= n) {
          free -= n
          return hold
        }
        const waiter = enqueue(n)
        return Effect.matchCauseEffect(restore(grantOf(waiter)), {
          onFailure: (cause) => {
            abandon(waiter)
            return Effect.failCause(cause)
          },
          onSuccess: () => hold
        })
      })
    }

    const bulkhead: Bulkhead = {
      withPermits,
      withPermit: withPermits(1),
      takePermits,
      available: Effect.sync(() => free),
      waiting: Effect.sync(() => waiting)
    }
    return bulkhead
  })
