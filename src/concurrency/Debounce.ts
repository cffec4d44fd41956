/**
 * Debouncing an effectful function: calls that arrive within `delay` of each other merge into
 * one run, made `delay` after the last of them, with the *latest* call's arguments; every
 * merged caller receives that run's outcome, success or failure. With `maxWait`, a window never
 * stays open longer than that from its first call, so a steady stream of calls still runs.
 *
 * The seed's `debounce` ran with the *first* call's arguments, and after one rejection its
 * `pending` promise was never reset, so every later call hung forever (seed bug 10). Here a run
 * that fails hands the failure to its callers and the next call opens a new window.
 *
 * A caller that is interrupted leaves the window and the others keep waiting; when every caller
 * of a window has left, the window is dropped (its run is interrupted, or never made). The run
 * takes place in a fiber of its own, started by the window's first caller (whose context it
 * uses); a call that arrives while a run is under way opens the next window (a run does not wait
 * for the one before it: wrap the function in a `Bulkhead` of one permit if runs must not
 * overlap). Each call only moves the window's deadline: no timer is restarted per call.
 *
 * Time is read through Effect's `Clock` and waited out with `Effect.sleep`, so windows are exact
 * under `TestClock`. For streams, use Effect's `Stream.debounce`: it debounces the elements of
 * a stream; this module debounces calls to a function, each caller waiting for its answer.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { AiModel, Debounce } from "wiz-effect"
 *
 * const program = Effect.gen(function* () {
 *   const model = yield* AiModel.AiModel
 *   // suggest a completion for what the user typed, once they pause typing for 300 ms
 *   const suggest = yield* Debounce.make(
 *     (draft: string) => model.generate(new AiModel.CompletionRequest({ prompt: draft, maxTokens: 32 })),
 *     { delay: "300 millis", maxWait: "2 seconds" }
 *   )
 *   const completion = yield* suggest("Summarise: Effect is a TypeScript libr")
 * })
 * ```
 *
 * @since 0.1.0
 */
import { Clock, Duration, Effect } from "effect"
import type { Exit } from "effect"
import { SharedCall } from "../internal/sharedCall.js"
import { durationUntil } from "../internal/sleepUntil.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** How long the calls must pause before the run is made. */
  readonly delay: Duration.DurationInput
  /** The longest a window stays open from its first call; by default, no bound. */
  readonly maxWait?: Duration.DurationInput
}

/**
 * `maxWait: infinity`: with no bound, only a pause of `delay` makes the run (the classic
 * debounce); set one when a steady stream of calls must still be answered.
 *
 * @since 0.1.0
 * @category defaults
 */
export const defaults = {
  maxWait: Duration.infinity
} as const

/**
 * A debounced function: each call waits for the run of its window and returns its outcome.
 *
 * @since 0.1.0
 * @category models
 */
export type Debounced<Args extends ReadonlyArray<unknown>, A, E, R> = (...args: Args) => Effect.Effect<A, E, R>

/** The calls merged so far into the next run. */
class Window<Args, A, E> {
  lastAt: number
  readonly call: SharedCall<A, E>
  constructor(public args: Args, readonly firstAt: number, onEnd: () => void) {
    this.lastAt = firstAt
    this.call = new SharedCall(onEnd)
  }
}

const asEffect = <A, E>(exit: Exit.Exit<A, E>): Effect.Effect<A, E> => exit

/**
 * Debounces `f`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <Args extends ReadonlyArray<unknown>, A, E = never, R = never>(
  f: (...args: Args) => Effect.Effect<A, E, R>,
  options: Options
): Effect.Effect<Debounced<Args, A, E, R>> =>
  Effect.sync(() => {
    const delay = Duration.toMillis(options.delay)
    const maxWait = Duration.toMillis(options.maxWait ?? defaults.maxWait)
    let open: Window<Args, A, E> | undefined = undefined

    // The window's fiber: wait until the calls pause (or `maxWait` is up), then close the window
    // to new calls and run with the latest arguments.
    const run = (window: Window<Args, A, E>): Effect.Effect<A, E, R> => {
      const wait: Effect.Effect<A, E, R> = Effect.flatMap(Clock.currentTimeMillis, (now) => {
        const due = Math.min(window.lastAt + delay, window.firstAt + maxWait)
        if (now < due) return Effect.zipRight(Effect.sleep(durationUntil(now, due)), wait)
        if (open === window) open = undefined
        return f(...window.args)
      })
      return wait
    }

    const debounced: Debounced<Args, A, E, R> = (...args) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        Effect.uninterruptibleMask((restore) => {
          const current = open
          if (current !== undefined) {
            current.args = args
            current.lastAt = now
            return current.call.join(restore, asEffect)
          }
          const window: Window<Args, A, E> = new Window(args, now, () => {
            if (open === window) open = undefined
          })
          open = window
          return window.call.lead(run(window), restore, asEffect)
        }))
    return debounced
  })
