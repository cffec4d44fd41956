/**
 * The statistics of a `wiz run` and its final summary: tasks succeeded, failed (by error tag,
 * those the model answered with an error apart from those that never reached it: refused while
 * its circuit was open until their deadline), invalid lines, lines skipped because an earlier
 * run answered them, model calls and retries, tasks that shared an answer (joined an identical
 * call in flight, or answered from the memo), breaker transitions, fallbacks, p50/p95 task
 * latency, throughput and wall time.
 *
 * {@link Stats} is fed by the run (each record written, each agent event); {@link render} turns
 * the final {@link Summary} into text. The progress line while the run goes on is the library's
 * `Progress`, fed from the same records and events.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import * as Summary from "wiz-effect/cli/Summary"
 *
 * const text = Effect.gen(function*() {
 *   const stats = yield* Summary.makeStats
 *   yield* stats.recordInvalid
 *   return Summary.render(yield* stats.summary(1000))
 * })
 * ```
 *
 * @since 0.1.0
 */
import { Effect, Option } from "effect"
import type { TaskResult } from "../agent/AgentTask.js"
import type { AgentEvent } from "../events/AgentEvent.js"

/**
 * What a run did.
 *
 * @since 0.1.0
 * @category models
 */
export interface Summary {
  readonly succeeded: number
  readonly failed: number
  /** Failed tasks that reached the model, per error tag, most frequent first (ties by tag). */
  readonly failedByTag: ReadonlyArray<readonly [tag: string, count: number]>
  /** Failed tasks that never reached the model (no call made), per error tag. */
  readonly neverReachedByTag: ReadonlyArray<readonly [tag: string, count: number]>
  readonly invalid: number
  /** Lines an earlier run had answered (`--resume`). */
  readonly skipped: number
  /**
   * Model calls of this run: each task's attempts, but a task that joined an identical call in
   * flight carries that call's attempts, which its leader already counts (and a memoized answer
   * made none).
   */
  readonly attempts: number
  readonly retries: number
  /**
   * Tasks that joined an identical model call in flight instead of making their own
   * (`--coalesce`); one that joined a task answered from the memo is counted in `memoized`.
   */
  readonly joined: number
  /** Tasks answered from the memo without a call (`--memo-ttl`). */
  readonly memoized: number
  /** Tasks whose calls waited for the token budget, and their waits in all (ms). */
  readonly budgetWaited: number
  readonly budgetWaitMillis: number
  /** Calls the retry policy gave up on, per reason (`budget`, `max-attempts`, ...), most first. */
  readonly givenUp: ReadonlyArray<readonly [reason: string, count: number]>
  readonly breakerTransitions: number
  readonly fallbacks: number
  /** Median task latency (nearest rank); none when no task ran. */
  readonly p50Millis: Option.Option<number>
  /** 95th percentile task latency (nearest rank); none when no task ran. */
  readonly p95Millis: Option.Option<number>
  /** Tasks answered or failed per second of wall time; none when no time passed. */
  readonly throughput: Option.Option<number>
  readonly wallMillis: number
}

/**
 * The running statistics of a run.
 *
 * @since 0.1.0
 * @category models
 */
export interface Stats {
  /** Count a task's outcome: its status, attempts, latency and error tag. */
  readonly recordResult: (result: TaskResult) => Effect.Effect<void>
  /** Count an input line that was not a valid task. */
  readonly recordInvalid: Effect.Effect<void>
  /** Count a line an earlier run had answered. */
  readonly recordSkipped: Effect.Effect<void>
  /** Count retries (and why they were given up), breaker transitions and fallbacks from the agent's events. */
  readonly recordEvent: (event: AgentEvent) => Effect.Effect<void>
  /** The summary so far, for a run that took `wallMillis`. */
  readonly summary: (wallMillis: number) => Effect.Effect<Summary>
}

/**
 * The `p`-th percentile (0 < p ≤ 100) of `values` by the nearest-rank method: the smallest
 * value with at least `p`% of the values at or below it, so it is always one of the values.
 * None for no values.
 *
 * @since 0.1.0
 * @category utils
 */
export const percentile = (values: ReadonlyArray<number>, p: number): Option.Option<number> => {
  if (values.length === 0) return Option.none()
  const sorted = [...values].sort((a, b) => a - b)
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length))
  return Option.fromNullable(sorted[rank - 1])
}

/**
 * New, zeroed statistics. Counters are plain fields touched inside `Effect.sync`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeStats: Effect.Effect<Stats> = Effect.sync(() => {
  let succeeded = 0
  let invalid = 0
  let skipped = 0
  let attempts = 0
  let retries = 0
  let breakerTransitions = 0
  let fallbacks = 0
  let joined = 0
  let memoized = 0
  let budgetWaited = 0
  let budgetWaitMillis = 0
  const failedByTag = new Map<string, number>()
  const neverReachedByTag = new Map<string, number>()
  const givenUp = new Map<string, number>()
  const durations: Array<number> = []
  const failedCount = () => {
    let n = 0
    for (const count of failedByTag.values()) n += count
    for (const count of neverReachedByTag.values()) n += count
    return n
  }

  return {
    recordResult: (result) =>
      Effect.sync(() => {
        const fromMemo = result.status === "succeeded" && result.memoized === true
        // a joined task's record carries the shared call's attempts: its leader counts them. A
        // task that joined a leader answered from the memo shared no call: it counts as memoized
        if (fromMemo) memoized++
        else if (result.coalesced?.role === "joined") joined++
        if (result.coalesced?.role !== "joined") attempts += result.attempts
        durations.push(result.durationMs)
        if (result.budgetWaitMs !== undefined) {
          budgetWaited++
          budgetWaitMillis += result.budgetWaitMs
        }
        if (result.status === "succeeded") {
          succeeded++
        } else {
          const byTag = result.attempts === 0 ? neverReachedByTag : failedByTag
          byTag.set(result.error._tag, (byTag.get(result.error._tag) ?? 0) + 1)
        }
      }),
    recordInvalid: Effect.sync(() => {
      invalid++
    }),
    recordSkipped: Effect.sync(() => {
      skipped++
    }),
    recordEvent: (event) =>
      Effect.sync(() => {
        switch (event._tag) {
          case "RetryScheduled":
            retries++
            break
          case "RetryGivenUp":
            givenUp.set(event.reason, (givenUp.get(event.reason) ?? 0) + 1)
            break
          case "BreakerTransition":
            breakerTransitions++
            break
          case "FallbackUsed":
            fallbacks++
            break
        }
      }),
    summary: (wallMillis) =>
      Effect.sync(() => {
        const failed = failedCount()
        return {
          succeeded,
          failed,
          failedByTag: mostFirst(failedByTag),
          neverReachedByTag: mostFirst(neverReachedByTag),
          invalid,
          skipped,
          attempts,
          retries,
          joined,
          memoized,
          budgetWaited,
          budgetWaitMillis,
          givenUp: mostFirst(givenUp),
          breakerTransitions,
          fallbacks,
          p50Millis: percentile(durations, 50),
          p95Millis: percentile(durations, 95),
          throughput: wallMillis > 0 ? Option.some((succeeded + failed) / (wallMillis / 1000)) : Option.none(),
          wallMillis
        }
      })
  }
})

const mostFirst = (counts: ReadonlyMap<string, number>): ReadonlyArray<readonly [string, number]> =>
  [...counts.entries()].sort(([a, x], [b, y]) => y - x || (a < b ? -1 : a > b ? 1 : 0))

const millis = (ms: number): string => (ms < 1000 ? `${Math.round(ms)}ms` : `${(ms / 1000).toFixed(2)}s`)

/**
 * Whose events a run's retries, breaker transitions and fallbacks were counted from: `all` its
 * tasks' (a run without a store); `here`, those of the tasks run in this process (a run on a
 * store: other processes, or an earlier run of the same batch, may have run the rest); `none`
 * (`--no-work`: the workers ran every task, and nothing here saw their events).
 *
 * @since 0.1.0
 * @category models
 */
export type EventsSeen = "all" | "here" | "none"

/**
 * The summary as the lines written to stderr at the end of a run. The `shared` line (tasks that
 * joined a call, tasks answered from the memo) is there when some task shared an answer, or
 * when `options.shared` says the run could share (`--coalesce`, `--memo-ttl`). The counts read
 * from events say whose they are unless `options.events` is `all` (the default), and are not
 * printed as numbers when they are `none`: a 0 there would be a count nobody made.
 *
 * @since 0.1.0
 * @category formatting
 */
export const render = (
  summary: Summary,
  options: { readonly shared?: boolean; readonly events?: EventsSeen } = {}
): string => {
  const list = (counts: ReadonlyArray<readonly [string, number]>) =>
    counts.map(([name, count]) => `${name} ${count}`).join(", ")
  const neverReached = summary.neverReachedByTag.length === 0
    ? []
    : [`never reached the model: ${list(summary.neverReachedByTag)}`]
  const causes = [...(summary.failedByTag.length === 0 ? [] : [list(summary.failedByTag)]), ...neverReached]
  const byTag = causes.length === 0 ? "" : ` (${causes.join("; ")})`
  const givenUp = summary.givenUp.length === 0 ? "" : `; gave up: ${list(summary.givenUp)}`
  const latency = Option.match(Option.all([summary.p50Millis, summary.p95Millis]), {
    onNone: () => "--",
    onSome: ([p50, p95]) => `p50 ${millis(p50)}, p95 ${millis(p95)}`
  })
  const throughput = Option.match(summary.throughput, {
    onNone: () => "--",
    onSome: (perSecond) => `${perSecond.toFixed(1)} tasks/s`
  })
  const events = options.events ?? "all"
  const here = events === "here" ? " in this process" : ""
  const retries = events === "none"
    ? " (retries: not seen here, each worker prints its own when it stops)"
    : ` (${summary.retries} retries${here}${givenUp})`
  return [
    `succeeded   ${summary.succeeded}`,
    `failed      ${summary.failed}${byTag}`,
    `invalid     ${summary.invalid}`,
    `skipped     ${summary.skipped} (already in the output)`,
    `attempts    ${summary.attempts}${retries}`,
    ...(options.shared === true || summary.joined + summary.memoized > 0
      ? [`shared      ${summary.joined} joined a call, ${summary.memoized} from the memo`]
      : []),
    ...(summary.budgetWaited > 0
      ? [`budget      ${summary.budgetWaited} tasks waited for the token budget, ${millis(summary.budgetWaitMillis)} in all`]
      : []),
    events === "none" ? "breaker     -- (not seen here)" : `breaker     ${summary.breakerTransitions} transitions${here}`,
    events === "none" ? "fallbacks   -- (not seen here)" : `fallbacks   ${summary.fallbacks}${here}`,
    `latency     ${latency}`,
    `throughput  ${throughput}`,
    `wall time   ${millis(summary.wallMillis)}`
  ].map((line) => `${line}\n`).join("")
}
