import { describe, expect, it } from "@effect/vitest"
import { Effect, Option } from "effect"
import { TaskFailed, TaskSucceeded } from "../../src/agent/AgentTask.js"
import * as AgentEvent from "../../src/events/AgentEvent.js"
import * as Summary from "../../src/cli/Summary.js"

const succeeded = (id: string, durationMs: number, attempts = 1) =>
  new TaskSucceeded({ id, output: "ok", attempts, model: "embedded", degraded: false, durationMs })

const failed = (id: string, tag: string, durationMs: number, attempts: number) =>
  new TaskFailed({ id, error: { _tag: tag, message: `${tag}!` }, attempts, durationMs })

describe("Summary", () => {
  it("percentile is nearest-rank: always one of the values", () => {
    const values = [50, 10, 40, 20, 30, 100, 90, 80, 70, 60] // 10..100 shuffled
    expect(Summary.percentile(values, 50)).toEqual(Option.some(50))
    expect(Summary.percentile(values, 95)).toEqual(Option.some(100))
    expect(Summary.percentile(values, 90)).toEqual(Option.some(90))
    expect(Summary.percentile(values, 1)).toEqual(Option.some(10))
    expect(Summary.percentile([7], 95)).toEqual(Option.some(7))
    expect(Summary.percentile([], 50)).toEqual(Option.none())
  })

  it("p50/p95 exact on 20 known durations (1..20 ms → 10 and 19)", () =>
    expect(Summary.percentile(Array.from({ length: 20 }, (_, i) => 20 - i), 50)).toEqual(Option.some(10)))

  it.effect("counts results, invalid and skipped lines, retries and why they were given up, breaker transitions and fallbacks", () =>
    Effect.gen(function*() {
      const stats = yield* Summary.makeStats
      for (let i = 1; i <= 18; i++) yield* stats.recordResult(succeeded(`s${i}`, i * 10))
      yield* stats.recordResult(succeeded("s19", 190, 3))
      yield* stats.recordResult(failed("f1", "Overloaded", 2000, 4))
      yield* stats.recordResult(failed("f2", "ModelTimeout", 3000, 4))
      yield* stats.recordResult(failed("f3", "Overloaded", 1000, 4))
      yield* stats.recordInvalid
      yield* stats.recordInvalid
      yield* stats.recordSkipped
      const error = { _tag: "Overloaded", message: "embedded: overloaded" }
      for (let attempt = 2; attempt <= 4; attempt++) {
        yield* stats.recordEvent(new AgentEvent.RetryScheduled({ taskId: "f1", model: "embedded", attempt, delayMillis: 100, error }))
      }
      for (const [taskId, reason] of [["f1", "max-attempts"], ["f2", "budget"], ["f3", "budget"]] as const) {
        yield* stats.recordEvent(new AgentEvent.RetryGivenUp({ taskId, model: "embedded", reason, attempts: 4, error }))
      }
      yield* stats.recordEvent(new AgentEvent.BreakerTransition({ breaker: "embedded", from: "Closed", to: "Open", atMillis: 5 }))
      yield* stats.recordEvent(new AgentEvent.FallbackUsed({ taskId: "s3", tier: "static", failures: [] }))
      yield* stats.recordEvent(new AgentEvent.TaskFinished({ taskId: "s1", status: "succeeded", attempts: 1, durationMs: 10 }))

      const summary = yield* stats.summary(4000)
      expect(summary).toEqual({
        succeeded: 19,
        failed: 3,
        failedByTag: [["Overloaded", 2], ["ModelTimeout", 1]],
        neverReachedByTag: [],
        invalid: 2,
        skipped: 1,
        attempts: 18 + 3 + 12,
        retries: 3,
        joined: 0,
        memoized: 0,
        budgetWaited: 0,
        budgetWaitMillis: 0,
        givenUp: [["budget", 2], ["max-attempts", 1]],
        breakerTransitions: 1,
        fallbacks: 1,
        // 22 durations: 10..180, 190, 1000, 2000, 3000 → rank 11 = 110, rank 21 = 2000
        p50Millis: Option.some(110),
        p95Millis: Option.some(2000),
        throughput: Option.some(5.5),
        wallMillis: 4000
      })
      expect(Summary.render(summary)).toBe(
        "succeeded   19\n" +
          "failed      3 (Overloaded 2, ModelTimeout 1)\n" +
          "invalid     2\n" +
          "skipped     1 (already in the output)\n" +
          "attempts    33 (3 retries; gave up: budget 2, max-attempts 1)\n" +
          "breaker     1 transitions\n" +
          "fallbacks   1\n" +
          "latency     p50 110ms, p95 2.00s\n" +
          "throughput  5.5 tasks/s\n" +
          "wall time   4.00s\n"
      )
    }))

  it.effect("counts read from events say whose they are: a run on a store counts its own process's; with --no-work, no number at all", () =>
    Effect.gen(function*() {
      const stats = yield* Summary.makeStats
      yield* stats.recordResult(succeeded("s1", 10, 3))
      yield* stats.recordEvent(
        new AgentEvent.RetryScheduled({ taskId: "s1", model: "m", attempt: 2, delayMillis: 5, error: { _tag: "Overloaded", message: "!" } })
      )
      const summary = yield* stats.summary(1000)
      expect(Summary.render(summary, { events: "here" })).toContain(
        "attempts    3 (1 retries in this process)\nbreaker     0 transitions in this process\nfallbacks   0 in this process\n"
      )
      const none = Summary.render(summary, { events: "none" })
      expect(none).toContain(
        "attempts    3 (retries: not seen here, each worker prints its own when it stops)\nbreaker     -- (not seen here)\nfallbacks   -- (not seen here)\n"
      )
      expect(Summary.render(summary)).toContain("attempts    3 (1 retries)\nbreaker     0 transitions\nfallbacks   0\n")
    }))

  it.effect("an empty run renders -- for latency and throughput instead of NaN", () =>
    Effect.gen(function*() {
      const stats = yield* Summary.makeStats
      const summary = yield* stats.summary(0)
      expect(summary.p50Millis).toEqual(Option.none())
      expect(summary.throughput).toEqual(Option.none())
      expect(Summary.render(summary)).toContain("latency     --\nthroughput  --\nwall time   0ms\n")
    }))

  it.effect("issue 6: the summary tells tasks that never reached the model (an open circuit until their deadline) from model errors", () =>
    Effect.gen(function*() {
      const stats = yield* Summary.makeStats
      yield* stats.recordResult(succeeded("s1", 10))
      yield* stats.recordResult(failed("f1", "Overloaded", 2000, 4))
      yield* stats.recordResult(failed("f2", "DeadlineExceeded", 120_000, 0))
      yield* stats.recordResult(failed("f3", "DeadlineExceeded", 120_000, 0))
      yield* stats.recordResult(failed("f4", "DeadlineExceeded", 120_000, 2))
      const summary = yield* stats.summary(120_000)
      expect(summary.failed).toBe(4)
      expect(summary.failedByTag).toEqual([["DeadlineExceeded", 1], ["Overloaded", 1]])
      expect(summary.neverReachedByTag).toEqual([["DeadlineExceeded", 2]])
      expect(Summary.render(summary)).toContain(
        "failed      4 (DeadlineExceeded 1, Overloaded 1; never reached the model: DeadlineExceeded 2)\n"
      )
    }))

  it.effect("issue 8.7: tasks that joined a call in flight or came from the memo are counted, and a joined task's shared calls are not counted twice", () =>
    Effect.gen(function*() {
      const stats = yield* Summary.makeStats
      // one call of 3 attempts served three tasks: the leader and two that joined it
      const shared = (id: string, role: "led" | "joined") =>
        new TaskSucceeded({ id, output: "ok", attempts: 3, model: "embedded", degraded: false, durationMs: 40, coalesced: { role, callers: 3 } })
      yield* stats.recordResult(shared("a", "led"))
      yield* stats.recordResult(shared("b", "joined"))
      yield* stats.recordResult(shared("c", "joined"))
      // a failed call of 2 attempts, led by d and joined by e: both fail, the calls count once
      const error = { _tag: "Overloaded", message: "embedded: overloaded" }
      yield* stats.recordResult(new TaskFailed({ id: "d", error, attempts: 2, durationMs: 9, coalesced: { role: "led", callers: 2 } }))
      yield* stats.recordResult(new TaskFailed({ id: "e", error, attempts: 2, durationMs: 9, coalesced: { role: "joined", callers: 2 } }))
      // answered from the memo: no call
      yield* stats.recordResult(
        new TaskSucceeded({ id: "f", output: "ok", attempts: 0, model: "embedded", degraded: false, durationMs: 0, memoized: true })
      )
      yield* stats.recordResult(succeeded("g", 10))
      const summary = yield* stats.summary(1000)
      expect([summary.succeeded, summary.failed, summary.attempts, summary.joined, summary.memoized]).toEqual([5, 2, 3 + 2 + 1, 3, 1])
      expect(summary.failedByTag).toEqual([["Overloaded", 2]])
      const text = Summary.render(summary)
      expect(text).toContain("attempts    6 (0 retries)\nshared      3 joined a call, 1 from the memo\nbreaker     0 transitions\n")
    }))

  it.effect("a task that joined a leader answered from the memo counts once, as memoized: no call was shared", () =>
    Effect.gen(function*() {
      const stats = yield* Summary.makeStats
      const fromMemo = (id: string, role: "led" | "joined") =>
        new TaskSucceeded({ id, output: "ok", attempts: 0, model: "embedded", degraded: false, durationMs: 0, memoized: true, coalesced: { role, callers: 2 } })
      yield* stats.recordResult(fromMemo("a", "led"))
      yield* stats.recordResult(fromMemo("b", "joined"))
      const summary = yield* stats.summary(1000)
      expect([summary.succeeded, summary.attempts, summary.joined, summary.memoized]).toEqual([2, 0, 0, 2])
    }))

  it.effect("the shared line is there when the run could share, even if nothing was shared, and not otherwise", () =>
    Effect.gen(function*() {
      const stats = yield* Summary.makeStats
      yield* stats.recordResult(succeeded("a", 10))
      const summary = yield* stats.summary(1000)
      expect(Summary.render(summary)).not.toContain("shared")
      expect(Summary.render(summary, { shared: true })).toContain("\nshared      0 joined a call, 0 from the memo\n")
    }))
})
