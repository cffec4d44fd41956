/**
 * Flow control against the embedded provider, whole runs in virtual time (`bench/internal/
 * virtualTime.ts`: exact timers, no real waiting; a 60-second run takes well under a second).
 * Two tables, each with ratios against the runs it is measured beside:
 *
 * 1. **Goodput at a token limit**: 2,000 tasks of mixed sizes against the provider's
 *    tokens-per-minute limit, all submitted at once: completion time against the minimum the
 *    limit allows, the share of requests refused with 429, and the tasks that failed — for our
 *    `TokenBudget` (limits given, and learned from the provider's reports), alone and inside
 *    `AgentService.processAll` (the whole stack, budget given, learned, off), for a fixed
 *    concurrency with retry (our `Retry` + `Bulkhead`, today's stack) and for cockatiel's
 *    `wrap(retry, bulkhead)` (its timers run on the same virtual clock).
 * 2. **Adaptive concurrency**: closed-loop callers against a provider whose capacity they are
 *    not told (32 at full speed, halved at 30 s): `AdaptiveLimit` against a sweep of fixed
 *    concurrencies — throughput, p99 latency and the share of `Overloaded`, in steady state for
 *    each capacity, and how long after the halving the adaptive run is back within bounds.
 *
 * Run with `npm run bench -- flow` (about half a minute, most of it the fixed sweep).
 */
import { bulkhead as cockatielBulkhead, ExponentialBackoff, handleWhen, retry as cockatielRetry, wrap } from "cockatiel"
import { Cause, Chunk, Effect, Exit, Fiber, Random, Ref, Runtime, Stream } from "effect"
import { AdaptiveLimit, AgentService, AgentTask, AiModel, Bulkhead, EmbeddedModel, Retry, TokenBudget } from "../src/index.js"
import * as VirtualTime from "./internal/virtualTime.js"
import * as Workload from "./internal/workload.js"

const percent = (x: number) => `${(x * 100).toFixed(x < 0.01 && x > 0 ? 2 : 1)}%`
const ratio = (x: number) => `${x.toFixed(2)}×`

// -----------------------------------------------------------------------------
// 1. goodput at a token limit
// -----------------------------------------------------------------------------

const TPM = 600_000
const TASKS = 2000
const CONCURRENCY = 64

const tasks = Workload.requests(TASKS, { seed: 1, minSentences: 2, maxSentences: 40, maxTokens: [64, 128, 256, 512] })

interface GoodputRun {
  readonly name: string
  readonly makespan: number
  readonly requests: number
  readonly refused: number
  readonly failed: number
  readonly tokens: number
}

/** Counts every request the provider answers, and the 429s among them. */
const counting = (model: AiModel.AiModel.Service) => {
  const counts = { requests: 0, refused: 0, tokens: 0 }
  const generate = (request: AiModel.CompletionRequest) =>
    Effect.onExit(model.generate(request), (exit) =>
      Effect.sync(() => {
        counts.requests++
        if (Exit.isFailure(exit) && Cause.failureOption(exit.cause).pipe((o) => o._tag === "Some" && o.value._tag === "RateLimited")) {
          counts.refused++
        }
        if (Exit.isSuccess(exit)) counts.tokens += exit.value.usage.totalTokens
      }))
  return { counts, generate }
}

const provider = EmbeddedModel.make({ seed: 3, tokensPerMinute: TPM })

/** Runs every task at once through `attempt`, in virtual time. */
const goodput = (
  name: string,
  setup: Effect.Effect<(generate: (r: AiModel.CompletionRequest) => Effect.Effect<AiModel.Completion, AiModel.ModelError>) => (request: AiModel.CompletionRequest) => Effect.Effect<unknown, unknown>>
): Promise<GoodputRun> =>
  VirtualTime.make().run(
    Effect.gen(function* () {
      const model = counting(yield* provider)
      const attempt = (yield* setup)(model.generate)
      const exits = yield* Effect.forEach(tasks, (task) => Effect.exit(attempt(task)), { concurrency: "unbounded" })
      const makespan = yield* Effect.clockWith((clock) => clock.currentTimeMillis)
      return { name, makespan, ...model.counts, failed: exits.filter(Exit.isFailure).length }
    }).pipe(Effect.withRandom(Random.make(7)))
  )

/** The same tasks through `AgentService.processAll` with `options`: the whole stack, as an app runs it. */
const goodputAgent = (name: string, options: AgentService.Options): Promise<GoodputRun> =>
  VirtualTime.make().run(
    Effect.gen(function* () {
      const base = yield* provider
      const model = counting(base)
      const agent = yield* AgentService.make({ concurrency: CONCURRENCY, maxTasks: TASKS, ...options }).pipe(
        Effect.provideService(AiModel.AiModel, { ...base, generate: model.generate })
      )
      const batch = tasks.map((request, i) => new AgentTask.AgentTask({ id: `t${i}`, prompt: request.prompt, maxTokens: request.maxTokens }))
      const results = Chunk.toReadonlyArray(yield* Stream.runCollect(agent.processAll(batch)))
      const makespan = yield* Effect.clockWith((clock) => clock.currentTimeMillis)
      return { name, makespan, ...model.counts, failed: results.filter((r) => r._tag === "TaskFailed").length }
    }).pipe(Effect.scoped, Effect.withRandom(Random.make(7)))
  )

/** cockatiel's `wrap(retry, bulkhead)` around the same provider, its backoff on the virtual clock. */
const cockatiel = (): Promise<GoodputRun> =>
  VirtualTime.make().run(
    Effect.gen(function* () {
      const model = counting(yield* provider)
      const runtime = yield* Effect.runtime<never>()
      const call = async (request: AiModel.CompletionRequest) => {
        const exit = await Runtime.runPromiseExit(runtime)(model.generate(request))
        if (Exit.isSuccess(exit)) return exit.value
        throw Cause.squash(exit.cause)
      }
      const policy = wrap(
        cockatielRetry(handleWhen((error) => ["RateLimited", "Overloaded"].includes((error as { _tag?: string })._tag ?? "")), {
          maxAttempts: 3,
          backoff: new ExponentialBackoff()
        }),
        cockatielBulkhead(CONCURRENCY, Infinity)
      )
      const settled = yield* Effect.promise(() => Promise.allSettled(tasks.map((task) => policy.execute(() => call(task)))))
      const makespan = yield* Effect.clockWith((clock) => clock.currentTimeMillis)
      return { name: "cockatiel: wrap(retry 3, bulkhead 64)", makespan, ...model.counts, failed: settled.filter((s) => s.status === "rejected").length }
    }),
    { promises: true }
  )

const goodputTable = async () => {
  console.error("goodput at a token limit...")
  const runs: Array<GoodputRun> = []
  const retry = Retry.make()
  runs.push(await goodput("TokenBudget, limits given (+ Retry, Bulkhead 64)", Effect.gen(function* () {
    const budget = yield* TokenBudget.make({ limits: { tokens: TPM } })
    const bulkhead = yield* Bulkhead.make({ permits: CONCURRENCY })
    return (generate) => (request) => retry.apply(budget.meter(request)(bulkhead.withPermit(generate(request))))
  })))
  runs.push(await goodput("TokenBudget, learned from reports (+ Retry, Bulkhead 64)", Effect.gen(function* () {
    const budget = yield* TokenBudget.make()
    const bulkhead = yield* Bulkhead.make({ permits: CONCURRENCY })
    return (generate) => (request) => retry.apply(budget.meter(request)(bulkhead.withPermit(generate(request))))
  })))
  runs.push(await goodputAgent("AgentService, tokenBudget: { limits: { tokens: TPM } }", { tokenBudget: { limits: { tokens: TPM } } }))
  runs.push(await goodputAgent("AgentService, tokenBudget: {} (learned, probing first)", { tokenBudget: {} }))
  runs.push(await goodputAgent("AgentService, its defaults (learned from the first report)", {}))
  runs.push(await goodputAgent("AgentService, concurrency: \"adaptive\" (budget learned)", { concurrency: "adaptive" }))
  runs.push(await goodputAgent("AgentService, tokenBudget: false", { tokenBudget: false }))
  runs.push(await goodput("today's stack: Retry + Bulkhead 64, no budget", Effect.gen(function* () {
    const bulkhead = yield* Bulkhead.make({ permits: CONCURRENCY })
    return (generate) => (request) => retry.apply(bulkhead.withPermit(generate(request)))
  })))
  runs.push(await goodput("today's stack, 10 attempts: Retry + Bulkhead 64, no budget", Effect.gen(function* () {
    const bulkhead = yield* Bulkhead.make({ permits: CONCURRENCY })
    const patient = Retry.make({ maxAttempts: 10 })
    return (generate) => (request) => patient.apply(bulkhead.withPermit(generate(request)))
  })))
  runs.push(await cockatiel())

  // The provider's bucket starts full (a minute's worth): the least time all the tokens can
  // take is what is left beyond that, at the refill rate.
  const total = runs[0]!.tokens
  const minimum = Math.max(0, total - TPM) / (TPM / 60_000)
  console.log("")
  console.log(`### Goodput at a token limit: ${TASKS} tasks, ${(total / 1000).toFixed(0)}k tokens used, ${TPM / 1000}k tokens per minute`)
  console.log("")
  console.log(`Least possible time: (tokens − the full bucket) ÷ refill = ${(minimum / 1000).toFixed(1)} s (the issue's tokens ÷ TPM, which ignores the bucket the provider starts with: ${(total / TPM * 60).toFixed(1)} s).`)
  console.log("")
  console.log("| stack | completion | vs least possible | requests | 429s | failed tasks |")
  console.log("|---|---:|---:|---:|---:|---:|")
  for (const run of runs) {
    console.log(
      `| ${run.name} | ${(run.makespan / 1000).toFixed(1)} s | ${ratio(run.makespan / minimum)} | ${run.requests} | ` +
        `${run.refused} (${percent(run.refused / run.requests)}) | ${run.failed} |`
    )
  }
}

// -----------------------------------------------------------------------------
// 2. adaptive concurrency
// -----------------------------------------------------------------------------

const CAPACITY = 32
const HALVED_AT = 30_000
const END = 60_000
const WORKERS = 256
const WARMUP = 10_000
const pool = Workload.requests(500, { seed: 3, minSentences: 2, maxSentences: 12, maxTokens: [48, 64, 96, 128] })

interface Sample {
  readonly start: number
  readonly end: number
  readonly ok: boolean
  readonly overloaded: boolean
}

/** `WORKERS` callers, each sending one request after another through `limit`, retrying failures. */
const closedLoop = (limit: <A, E>(self: Effect.Effect<A, E>) => Effect.Effect<A, E>) =>
  VirtualTime.make().run(
    Effect.gen(function* () {
      const capacity = yield* Ref.make(CAPACITY)
      const model = yield* EmbeddedModel.make({ seed: 11, capacity })
      const retry = Retry.make({ maxAttempts: 10 })
      const samples: Array<Sample> = []
      let next = 0
      const call = (request: AiModel.CompletionRequest) =>
        Effect.clockWith((clock) => {
          const start = clock.unsafeCurrentTimeMillis()
          return Effect.onExit(model.generate(request), (exit) =>
            Effect.sync(() => {
              const failure = Exit.isFailure(exit) ? Cause.failureOption(exit.cause) : undefined
              samples.push({
                start,
                end: clock.unsafeCurrentTimeMillis(),
                ok: Exit.isSuccess(exit),
                overloaded: failure !== undefined && failure._tag === "Some" && failure.value._tag === "Overloaded"
              })
            }))
        })
      const worker = Effect.gen(function* () {
        while ((yield* Effect.clockWith((clock) => clock.currentTimeMillis)) < END) {
          yield* Effect.exit(retry.apply(limit(call(pool[next++ % pool.length]!))))
        }
      })
      yield* Effect.fork(Effect.zipRight(Effect.sleep(HALVED_AT), Ref.set(capacity, CAPACITY / 2)))
      yield* Effect.forEach(Array.from({ length: WORKERS }), () => worker, { concurrency: "unbounded", discard: true })
      return samples
    }).pipe(Effect.withRandom(Random.make(5)))
  )

interface Window {
  readonly throughput: number
  readonly p99: number
  readonly overloaded: number
}

const window = (samples: ReadonlyArray<Sample>, from: number, to: number): Window => {
  const ended = samples.filter((s) => s.end >= from && s.end < to)
  const latencies = ended.filter((s) => s.ok).map((s) => s.end - s.start).sort((a, b) => a - b)
  return {
    throughput: latencies.length / ((to - from) / 1000),
    p99: latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * 0.99))] ?? NaN,
    overloaded: ended.filter((s) => s.overloaded).length / Math.max(1, ended.length)
  }
}

const within = (run: Window, best: Window) =>
  run.throughput >= 0.95 * best.throughput && run.p99 <= 1.3 * best.p99 && run.overloaded <= 0.01

const adaptiveTable = async () => {
  console.error("adaptive concurrency: fixed sweep...")
  const sweep = [8, 16, 24, 32, 40, 48, 64, 96]
  const fixed: Array<{ readonly c: number; readonly samples: ReadonlyArray<Sample> }> = []
  for (const c of sweep) {
    const bulkhead = await Effect.runPromise(Bulkhead.make({ permits: c }))
    fixed.push({ c, samples: await closedLoop(bulkhead.withPermit) })
  }
  console.error("adaptive concurrency: AdaptiveLimit...")
  const adaptiveLimit = await Effect.runPromise(AdaptiveLimit.make())
  const adaptive = await closedLoop(adaptiveLimit.withPermit)

  const phases = [
    { name: `capacity ${CAPACITY}`, from: WARMUP, to: HALVED_AT },
    { name: `capacity ${CAPACITY / 2} (after the halving)`, from: HALVED_AT + 5000, to: END }
  ]
  console.log("")
  console.log(`### Adaptive concurrency: ${WORKERS} closed-loop callers, a provider of capacity ${CAPACITY} halved at ${HALVED_AT / 1000} s, Overloaded beyond 2× capacity`)
  const bests: Array<{ readonly c: number; readonly w: Window }> = []
  for (const phase of phases) {
    const rows = fixed.map(({ c, samples }) => ({ c, w: window(samples, phase.from, phase.to) }))
    // the best fixed: the highest throughput; among those within 1% of it, the lowest p99
    const top = Math.max(...rows.map((r) => r.w.throughput))
    const best = rows.filter((r) => r.w.throughput >= 0.99 * top).sort((a, b) => a.w.p99 - b.w.p99)[0]!
    bests.push(best)
    const a = window(adaptive, phase.from, phase.to)
    console.log("")
    console.log(`${phase.name}, requests ending in [${phase.from / 1000} s, ${phase.to / 1000} s): best fixed concurrency ${best.c}`)
    console.log("")
    console.log("| concurrency | throughput | vs best | p99 | vs best | Overloaded |")
    console.log("|---|---:|---:|---:|---:|---:|")
    for (const { c, w } of [...rows, { c: "adaptive" as const, w: a }]) {
      console.log(
        `| ${c === "adaptive" ? "**AdaptiveLimit**" : `fixed ${c}`} | ${w.throughput.toFixed(1)}/s | ${percent(w.throughput / best.w.throughput)} | ` +
          `${w.p99.toFixed(0)} ms | ${ratio(w.p99 / best.w.p99)} | ${percent(w.overloaded)} |`
      )
    }
    console.log("")
    console.log(
      `Targets (throughput ≥ 95% of the best fixed, p99 ≤ 1.3× its p99, Overloaded ≤ 1%): ${within(a, best.w) ? "met" : "not met"} ` +
        `(${percent(a.throughput / best.w.throughput)}, ${ratio(a.p99 / best.w.p99)}, ${percent(a.overloaded)}).`
    )
  }

  // Recovery: 5-second windows of the adaptive run every 250 ms from the halving, each held to
  // the bounds against the best fixed run's steady state at the new capacity: when is the first
  // window within them, and from when is every later one?
  const best = window(fixed.find((f) => f.c === bests[1]!.c)!.samples, phases[1]!.from, phases[1]!.to)
  const starts: Array<number> = []
  for (let s = HALVED_AT; s + 5000 <= END; s += 250) starts.push(s)
  const ok = starts.map((s) => within(window(adaptive, s, s + 5000), best))
  const back = starts[ok.indexOf(true)]
  let stays = starts.length
  for (let i = starts.length - 1; i >= 0 && ok[i]; i--) stays = i
  const seconds = (at: number | undefined) => at === undefined ? "never" : `${((at - HALVED_AT) / 1000).toFixed(2)} s`
  console.log("")
  console.log(
    `Recovery after the halving (5-s windows against fixed ${bests[1]!.c}'s steady state): back within bounds ` +
      `${seconds(back)} after it (target < 5 s: ${back !== undefined && back - HALVED_AT < 5000 ? "met" : "not met"}); ` +
      `every later window within them from ${seconds(starts[stays])}; ${ok.filter(Boolean).length} of ${ok.length} windows within.`
  )
}

// -----------------------------------------------------------------------------
// 3. adaptive makespan: a whole batch through AgentService
// -----------------------------------------------------------------------------

const BATCH = 2000
const batch = Workload.requests(BATCH, { seed: 9, minSentences: 2, maxSentences: 12, maxTokens: [48, 64, 96, 128] })
  .map((request, i) => new AgentTask.AgentTask({ id: `t${i}`, prompt: request.prompt, maxTokens: request.maxTokens }))

interface Scenario {
  readonly name: string
  readonly failureRate?: number
  /** From this time on (ms), every call takes three times as long, whatever the load. */
  readonly slowerFrom?: number
}

const scenarios: ReadonlyArray<Scenario> = [
  { name: "fault-free" },
  { name: "20% steady faults (429 with Retry-After, 529, hangs)", failureRate: 0.2 },
  { name: "3× slower for good from 10 s (not from load)", slowerFrom: 10_000 }
]

interface MakespanRun {
  readonly makespan: number
  readonly failed: number
  /** Adaptive only: the time the limit spent at its floor, and its value every 100 ms. */
  readonly atFloor: number
  readonly limits: ReadonlyArray<number>
}

/**
 * `BATCH` tasks through `AgentService.processAll` (timeout 5 s, its other defaults) against a
 * provider of capacity `CAPACITY` (`Overloaded` beyond twice that in flight).
 */
const makespanRun = (scenario: Scenario, concurrency: number | "adaptive"): Promise<MakespanRun> =>
  VirtualTime.make().run(
    Effect.gen(function* () {
      const capacity = yield* Ref.make(CAPACITY)
      const options = { seed: 13, capacity, failureRate: scenario.failureRate ?? 0 }
      const normal = yield* EmbeddedModel.make(options)
      const slowerFrom = scenario.slowerFrom
      // the slower provider: the same one with every latency tripled, its own in-flight count
      const model = slowerFrom === undefined ? normal : yield* Effect.map(
        EmbeddedModel.make({ ...options, timeToFirstToken: "450 millis", perToken: "12 millis" }),
        (slower): AiModel.AiModel.Service => ({
          ...normal,
          generate: (request) =>
            Effect.clockWith((clock) => clock.unsafeCurrentTimeMillis() < slowerFrom ? normal.generate(request) : slower.generate(request))
        })
      )
      const agent = yield* AgentService.make({ concurrency, timeout: "5 seconds" }).pipe(
        Effect.provideService(AiModel.AiModel, model)
      )
      const limits: Array<number> = []
      const sampler = yield* Effect.fork(Effect.forever(Effect.zipRight(
        Effect.flatMap(agent.flow, (flow) => Effect.sync(() => limits.push(flow.limit))),
        Effect.sleep("100 millis")
      )))
      const results = Chunk.toReadonlyArray(yield* Stream.runCollect(agent.processAll(batch)))
      const makespan = yield* Effect.clockWith((clock) => clock.currentTimeMillis)
      yield* Fiber.interrupt(sampler)
      return {
        makespan,
        failed: results.filter((r) => r._tag === "TaskFailed").length,
        atFloor: limits.filter((limit) => limit <= AdaptiveLimit.defaults.min).length * 100,
        limits
      }
    }).pipe(Effect.scoped, Effect.withRandom(Random.make(7)))
  )

const makespanTable = async () => {
  const sweep = [8, 16, 24, 32, 48, 64, 96, 128]
  console.log("")
  console.log(`### Adaptive makespan: ${BATCH} tasks through \`AgentService.processAll\`, a provider of capacity ${CAPACITY} (\`Overloaded\` beyond 2×), timeout 5 s`)
  console.log("")
  console.log(`The best fixed limit of a sweep (${sweep.join(", ")}): the shortest makespan among those that fail at most 1% of the tasks.`)
  console.log("")
  console.log("| scenario | best fixed | its makespan | adaptive | vs best | time at the floor | limit (median, p10–p90) | failed (adaptive / best) |")
  console.log("|---|---:|---:|---:|---:|---:|---:|---:|")
  for (const scenario of scenarios) {
    console.error(`adaptive makespan: ${scenario.name}...`)
    const fixed: Array<{ readonly c: number; readonly run: MakespanRun }> = []
    for (const c of sweep) fixed.push({ c, run: await makespanRun(scenario, c) })
    const best = fixed.filter(({ run }) => run.failed <= BATCH / 100).sort((a, b) => a.run.makespan - b.run.makespan)[0]!
    const adaptive = await makespanRun(scenario, "adaptive")
    const sorted = adaptive.limits.slice().sort((a, b) => a - b)
    const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN
    const r = adaptive.makespan / best.run.makespan
    console.log(
      `| ${scenario.name} | ${best.c} | ${(best.run.makespan / 1000).toFixed(1)} s | ${(adaptive.makespan / 1000).toFixed(1)} s | ` +
        `${ratio(r)}${r <= 1.3 ? "" : " (target ≤ 1.3×: not met)"} | ${(adaptive.atFloor / 1000).toFixed(1)} s | ${at(0.5)} (${at(0.1)}–${at(0.9)}) | ` +
        `${adaptive.failed} / ${best.run.failed} |`
    )
    console.error(`  fixed: ${fixed.map(({ c, run }) => `${c}: ${(run.makespan / 1000).toFixed(1)} s (${run.failed} failed)`).join(", ")}`)
  }
}

const main = async () => {
  const only = process.argv[2]
  if (only === undefined || only === "goodput") await goodputTable()
  if (only === undefined || only === "adaptive") await adaptiveTable()
  if (only === undefined || only === "makespan") await makespanTable()
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
