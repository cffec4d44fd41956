/**
 * The least possible makespan of a batch against a faulty embedded provider: what the faults
 * themselves force, with no policy's cost added. The embedded model draws each call's fault
 * and latencies from `(seed, prompt, how many times that prompt was asked before)`, so the
 * n-th attempt of a task meets the same fault whatever runs beside it. Asking a fresh model
 * with the same options each task's attempts in turn, in virtual time, replays that plan:
 *
 * - a `529` (`Overloaded`) or a `429` comes back at once: it forces one more call, no slot time;
 * - a `429`'s `Retry-After` is waited out before the next attempt (on the task's chain; it
 *   needs no call slot);
 * - a hang is held to the attempt timeout (slot time and chain);
 * - an answer takes its latency (slot time and chain);
 * - a task stops at its first answer, a permanent error, or after `maxAttempts` attempts.
 *
 * No schedule of those calls on `concurrency` slots ends before the total slot time divided by
 * `concurrency`, nor before the longest task's chain: the floor is the larger of the two. (It
 * ignores that a task admitted late cannot have its hang earlier; no online scheduler knows
 * which task will hang, so the floor is a bound, not a target met exactly.)
 */
import { Clock, Duration, Effect, Exit } from "effect"
import { AgentTask, AiModel, EmbeddedModel } from "../../src/index.js"
import * as VirtualTime from "./virtualTime.js"

export interface Floor {
  /** Calls the faults force (first attempts included). */
  readonly calls: number
  /** Calls that hung and were held to the timeout. */
  readonly hangs: number
  /** Calls refused with a Retry-After, and the waits they asked for in all (ms). */
  readonly retryAfters: number
  readonly retryAfterMillis: number
  /** Tasks that get no answer within `maxAttempts`. */
  readonly unanswered: number
  /** Time a call slot is held, summed over all calls (ms). */
  readonly busyMillis: number
  /** The longest task: its calls and Retry-After waits one after another (ms). */
  readonly longestChainMillis: number
  /** `max(busyMillis / concurrency, longestChainMillis)`. */
  readonly floorMillis: number
}

export interface Scenario {
  readonly concurrency: number
  readonly timeout: Duration.DurationInput
  /** Attempts per task, the first included (the policy under test allows as many). */
  readonly maxAttempts: number
  /** `maxTokens` of a task that sets none. */
  readonly maxTokens: number
}

interface Chain {
  readonly calls: number
  readonly hangs: number
  readonly retryAfters: number
  readonly retryAfterMillis: number
  readonly answered: boolean
  readonly busyMillis: number
  readonly chainMillis: number
}

/** Replays each task's attempts against a fresh model with `model`'s options, in virtual time. */
export const floor = (
  tasks: ReadonlyArray<AgentTask.AgentTask>,
  model: EmbeddedModel.Options,
  scenario: Scenario
): Promise<Floor> =>
  VirtualTime.make().run(Effect.gen(function*() {
    const provider = yield* EmbeddedModel.make(model)
    const chainOf = (task: AgentTask.AgentTask) =>
      Effect.gen(function*() {
        const request = new AiModel.CompletionRequest({ prompt: task.prompt, maxTokens: task.maxTokens ?? scenario.maxTokens })
        let calls = 0, hangs = 0, retryAfters = 0, retryAfterMillis = 0, busyMillis = 0, chainMillis = 0
        let answered = false
        while (calls < scenario.maxAttempts && !answered) {
          calls++
          const start = yield* Clock.currentTimeMillis
          const exit = yield* Effect.exit(
            Effect.timeoutFail(provider.generate(request), { duration: scenario.timeout, onTimeout: () => "hung" as const })
          )
          const took = (yield* Clock.currentTimeMillis) - start
          busyMillis += took
          chainMillis += took
          if (Exit.isSuccess(exit)) {
            answered = true
            break
          }
          const error = exit.cause._tag === "Fail" ? exit.cause.error : undefined
          if (error === "hung") hangs++
          else if (error === undefined || AiModel.isPermanent(error)) break
          else if (error._tag === "RateLimited" && error.retryAfter !== undefined) {
            const wait = Duration.toMillis(error.retryAfter)
            retryAfters++
            retryAfterMillis += wait
            chainMillis += wait
            yield* Effect.sleep(wait)
          }
        }
        return { calls, hangs, retryAfters, retryAfterMillis, answered, busyMillis, chainMillis } satisfies Chain
      })
    const chains = yield* Effect.forEach(tasks, chainOf, { concurrency: "unbounded" })
    const sum = (f: (chain: Chain) => number) => chains.reduce((total, chain) => total + f(chain), 0)
    const busyMillis = sum((c) => c.busyMillis)
    const longestChainMillis = chains.reduce((longest, c) => Math.max(longest, c.chainMillis), 0)
    return {
      calls: sum((c) => c.calls),
      hangs: sum((c) => c.hangs),
      retryAfters: sum((c) => c.retryAfters),
      retryAfterMillis: sum((c) => c.retryAfterMillis),
      unanswered: sum((c) => (c.answered ? 0 : 1)),
      busyMillis,
      longestChainMillis,
      floorMillis: Math.max(busyMillis / scenario.concurrency, longestChainMillis)
    }
  }))
