/**
 * Running many calls at once, at most `concurrency` of them at a time, in a sliding window: a
 * new call starts as soon as any call ends.
 * - `settle` is `Promise.allSettled` with a limit: it never fails as a whole, and reports every
 *   success and every failure with the index of the item it came from.
 * - `all` fails fast: at the first failure it interrupts the calls still running, waits for
 *   them to stop (their finalizers run), starts no new one, and fails with that error. The
 *   seed's `Promise.all` rejected at once but left every other call running, and paying
 *   (seed bug 2).
 *
 * The seed's `batchProcess` ran the items in batches of `concurrency`, each batch waiting for
 * its slowest call before the next began (seed bug 3, head-of-line blocking): with 200 calls of
 * exponential latency (mean 20 ms) on 8 slots, batches take ~2.7× the best possible time and a
 * sliding window ~1.1× (`examples/parallel.ts` measures it under `TestClock`).
 *
 * Both are Effect's own `Effect.forEach` with a `concurrency` option; this module names the two
 * behaviours, and gives `settle` its indexed result.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { AiModel, Parallel } from "wiz-effect"
 *
 * const program = Effect.gen(function* () {
 *   const model = yield* AiModel.AiModel
 *   const prompts = ["Summarise: ...", "Translate: ...", "Classify: ..."]
 *   const settled = yield* Parallel.settle(
 *     prompts,
 *     (prompt) => model.generate(new AiModel.CompletionRequest({ prompt, maxTokens: 64 })),
 *     { concurrency: 8 }
 *   )
 *   for (const failure of settled.failures) console.log(`prompt ${failure.index} failed`, failure.cause)
 *   return settled.successes.map((success) => success.value.text)
 * })
 * ```
 *
 * @since 0.1.0
 */
import { Cause, Effect, Exit } from "effect"
import type { Option } from "effect"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** How many calls run at once: a positive integer, or `"unbounded"` (`Promise.all`'s choice). */
  readonly concurrency?: number | "unbounded"
}

/**
 * `concurrency: 8`: the same default as `AgentService`; a provider's rate limit, not the number
 * of items, should decide it, so an unbounded default would be the wrong one.
 *
 * @since 0.1.0
 * @category defaults
 */
export const defaults = {
  concurrency: 8
} as const

/**
 * An item whose call succeeded.
 *
 * @since 0.1.0
 * @category models
 */
export interface Succeeded<A> {
  readonly _tag: "Succeeded"
  /** The item's position in the input. */
  readonly index: number
  readonly value: A
}

/**
 * An item whose call failed: with its typed error, or a defect or interruption in `cause`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Failed<E> {
  readonly _tag: "Failed"
  /** The item's position in the input. */
  readonly index: number
  /** The typed error, if the call failed with one (`None` for a defect or an interruption). */
  readonly error: Option.Option<E>
  readonly cause: Cause.Cause<E>
}

/**
 * What `settle` answers: every outcome in input order, and the successes and failures apart.
 *
 * @since 0.1.0
 * @category models
 */
export interface Settled<A, E> {
  readonly outcomes: ReadonlyArray<Succeeded<A> | Failed<E>>
  readonly successes: ReadonlyArray<Succeeded<A>>
  readonly failures: ReadonlyArray<Failed<E>>
}

const settleOne = <A, E>(exit: Exit.Exit<A, E>, index: number): Succeeded<A> | Failed<E> =>
  Exit.isSuccess(exit)
    ? { _tag: "Succeeded", index, value: exit.value }
    : { _tag: "Failed", index, error: Cause.failureOption(exit.cause), cause: exit.cause }

/**
 * Runs `f` on every item, `concurrency` at a time, and reports every outcome with its item's
 * index. Never fails: a typed error, a defect or an interruption of one call is that item's
 * `Failed`. Interrupting `settle` itself interrupts the calls still running.
 *
 * @since 0.1.0
 * @category combinators
 */
export const settle = <T, A, E, R>(
  items: Iterable<T>,
  f: (item: T, index: number) => Effect.Effect<A, E, R>,
  options: Options = {}
): Effect.Effect<Settled<A, E>, never, R> =>
  Effect.map(
    Effect.forEach(items, (item, index) => Effect.map(Effect.exit(f(item, index)), (exit) => settleOne(exit, index)), {
      concurrency: options.concurrency ?? defaults.concurrency
    }),
    (outcomes) => {
      const successes: Array<Succeeded<A>> = []
      const failures: Array<Failed<E>> = []
      for (const outcome of outcomes) {
        if (outcome._tag === "Succeeded") successes.push(outcome)
        else failures.push(outcome)
      }
      return { outcomes, successes, failures }
    }
  )

/**
 * Runs `f` on every item, `concurrency` at a time, and returns the values in input order. At
 * the first failure, the calls still running are interrupted and awaited (their finalizers
 * run), no further call starts, and `all` fails with that failure.
 *
 * @since 0.1.0
 * @category combinators
 */
export const all = <T, A, E, R>(
  items: Iterable<T>,
  f: (item: T, index: number) => Effect.Effect<A, E, R>,
  options: Options = {}
): Effect.Effect<Array<A>, E, R> => Effect.forEach(items, f, { concurrency: options.concurrency ?? defaults.concurrency })
