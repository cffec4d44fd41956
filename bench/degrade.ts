/**
 * Goodput under provider faults: the same batch of tasks through our `AgentService` and through
 * cockatiel composed as its README does (`wrap(retry, circuitBreaker(ConsecutiveBreaker(5)),
 * bulkhead)`, retry `maxAttempts: 3` with `ExponentialBackoff`, `halfOpenAfter: 10 s`), both
 * against the embedded provider in real time: fault rates 0 / 10 / 20 / 40% (429 with
 * Retry-After 0.5–2 s, 529, hangs), a 5 s outage in the middle of the run, and a provider that
 * never answers. cockatiel runs twice: as its README composes it (no timeout, so a hung call
 * holds its slot forever) and with its `timeout(2 s, Aggressive)` added, like ours.
 *
 * Printed per scenario and stack: success %, makespan ÷ our fault-free makespan, model calls
 * per success, and the time until the last record (a run still going after the cap is cut off
 * and reported as such). Then, for each fault rate, the floor (`internal/faultFloor.ts`: the
 * least possible makespan, from the same seed's fault plan: the extra calls the faults force,
 * the hangs held to the timeout, the Retry-After waits, on 64 slots) and each stack's makespan
 * against it, ours also in virtual time (the policies' cost alone, free of the machine's load).
 *
 *   npm run bench -- degrade                        (about ten minutes: every run is real time)
 *   npx tsx bench/degrade.ts 500                    (a smaller batch)
 *   npx tsx bench/degrade.ts 2000 fault-free "20% faults"   (only the scenarios named)
 */
import {
  bulkhead as cockatielBulkhead,
  circuitBreaker,
  ConsecutiveBreaker,
  ExponentialBackoff,
  handleAll,
  retry as cockatielRetry,
  timeout as cockatielTimeout,
  TimeoutStrategy,
  wrap
} from "cockatiel"
import type { IPolicy } from "cockatiel"
import { Effect, Layer, Runtime, Stream } from "effect"
import { readFileSync } from "node:fs"
import { performance } from "node:perf_hooks"
import { AgentService, AgentTask, AiModel, EmbeddedModel, Retry } from "../src/index.js"
import * as FaultFloor from "./internal/faultFloor.js"
import * as VirtualTime from "./internal/virtualTime.js"

const concurrency = 64
const timeout = "2 seconds"
const capSeconds = 180

interface Outcome {
  readonly stack: string
  readonly tasks: number
  readonly succeeded: number
  readonly calls: number
  readonly lastRecordSeconds: number
  readonly cutOff: boolean
  readonly failedByTag: ReadonlyMap<string, number>
}

/** `n` tasks with distinct prompts, from the examples. */
const makeTasks = (n: number): ReadonlyArray<AgentTask.AgentTask> => {
  const lines = readFileSync(new URL("../examples/tasks.jsonl", import.meta.url), "utf8").split("\n").filter((l) => l.trim())
  return Array.from({ length: n }, (_, i) => {
    const base = JSON.parse(lines[i % lines.length]!) as { id: string; prompt: string; maxTokens?: number }
    return new AgentTask.AgentTask({
      id: `t${i}`,
      prompt: `${base.prompt} (variant ${Math.floor(i / lines.length)})`,
      ...(base.maxTokens === undefined ? {} : { maxTokens: base.maxTokens })
    })
  })
}

/** A fresh embedded provider (an outage is timed from now) that counts the calls it gets. */
const provider = (options: EmbeddedModel.Options) => {
  const counter = { calls: 0 }
  const model = Effect.runSync(EmbeddedModel.make({ seed: 7, ...options }))
  const counted: AiModel.AiModel.Service = {
    name: model.name,
    generate: (request) => Effect.suspend(() => (counter.calls++, model.generate(request))),
    stream: model.stream
  }
  return { counter, model: counted }
}

const tagOf = (error: unknown): string =>
  typeof error === "object" && error !== null && "_tag" in error ? String((error as { _tag: unknown })._tag)
  : error instanceof Error ? error.constructor.name
  : "Error"

const ours = async (tasks: ReadonlyArray<AgentTask.AgentTask>, options: EmbeddedModel.Options): Promise<Outcome> => {
  const { counter, model } = provider(options)
  const start = performance.now()
  let last = 0
  let succeeded = 0
  const failedByTag = new Map<string, number>()
  const run = Effect.gen(function*() {
    const agent = yield* AgentService.AgentService
    yield* Stream.runForEach(agent.processAll(tasks), (result) =>
      Effect.sync(() => {
        last = performance.now()
        if (result._tag === "TaskSucceeded") succeeded++
        else failedByTag.set(result.error._tag, (failedByTag.get(result.error._tag) ?? 0) + 1)
      }))
  }).pipe(
    Effect.provide(AgentService.layer({ concurrency, timeout }).pipe(Layer.provide(Layer.succeed(AiModel.AiModel, model)))),
    Effect.timeoutTo({ duration: `${capSeconds} seconds`, onSuccess: () => false, onTimeout: () => true })
  )
  const cutOff = await Effect.runPromise(run)
  return {
    stack: "wiz-effect AgentService",
    tasks: tasks.length,
    succeeded,
    calls: counter.calls,
    lastRecordSeconds: (last - start) / 1000,
    cutOff,
    failedByTag
  }
}

/**
 * Our makespan in virtual time (`internal/virtualTime.ts`): the same batch, model and options,
 * with no CPU or event-loop delay, so what it shows against the floor is the policies' cost
 * alone, whatever else the machine is doing.
 */
const oursVirtual = (tasks: ReadonlyArray<AgentTask.AgentTask>, options: EmbeddedModel.Options): Promise<number> => {
  const world = VirtualTime.make()
  return world.run(Effect.gen(function*() {
    const agent = yield* AgentService.make({ concurrency, timeout }).pipe(
      Effect.provideServiceEffect(AiModel.AiModel, EmbeddedModel.make({ seed: 7, ...options }))
    )
    yield* Stream.runDrain(agent.processAll(tasks))
    return world.now() / 1000
  }).pipe(Effect.scoped))
}

const cockatiel = async (
  tasks: ReadonlyArray<AgentTask.AgentTask>,
  options: EmbeddedModel.Options,
  withTimeout: boolean
): Promise<Outcome> => {
  const { counter, model } = provider(options)
  const runPromise = Runtime.runPromise(Runtime.defaultRuntime)
  const policies: Array<IPolicy> = [
    cockatielRetry(handleAll, { maxAttempts: 3, backoff: new ExponentialBackoff() }),
    circuitBreaker(handleAll, { halfOpenAfter: 10_000, breaker: new ConsecutiveBreaker(5) }),
    cockatielBulkhead(concurrency, Infinity)
  ]
  if (withTimeout) policies.push(cockatielTimeout(2_000, TimeoutStrategy.Aggressive))
  const policy = wrap(...policies)
  const start = performance.now()
  let last = 0
  let succeeded = 0
  let settled = 0
  const failedByTag = new Map<string, number>()
  const all = Promise.all(tasks.map((task) =>
    policy.execute(({ signal }) =>
      runPromise(model.generate(new AiModel.CompletionRequest({ prompt: task.prompt, maxTokens: task.maxTokens ?? 256 })), { signal })
    ).then(
      () => succeeded++,
      (error) => failedByTag.set(tagOf(error), (failedByTag.get(tagOf(error)) ?? 0) + 1)
    ).finally(() => {
      settled++
      last = performance.now()
    })
  ))
  let timer: NodeJS.Timeout | undefined
  const cutOff = await Promise.race([
    all.then(() => false),
    new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), capSeconds * 1000)))
  ])
  clearTimeout(timer)
  return {
    stack: withTimeout ? "cockatiel + timeout(2 s)" : "cockatiel (its README's wrap)",
    tasks: tasks.length,
    succeeded,
    calls: counter.calls,
    lastRecordSeconds: cutOff && settled < tasks.length ? capSeconds : (last - start) / 1000,
    cutOff: cutOff && settled < tasks.length,
    failedByTag
  }
}

interface Scenario {
  readonly name: string
  readonly tasks: number
  readonly model: (baseline: number) => EmbeddedModel.Options
}

const main = async () => {
  const n = Number(process.argv[2] ?? 2000)
  const only = process.argv.slice(3)
  const all: ReadonlyArray<Scenario> = [
    { name: "fault-free", tasks: n, model: () => ({}) },
    { name: "10% faults", tasks: n, model: () => ({ failureRate: 0.1 }) },
    { name: "20% faults", tasks: n, model: () => ({ failureRate: 0.2 }) },
    { name: "40% faults", tasks: n, model: () => ({ failureRate: 0.4 }) },
    {
      name: "5 s outage mid-run",
      tasks: n,
      model: (baseline) => ({ outage: { after: `${Math.round(baseline * 400)} millis`, lasting: "5 seconds" } })
    },
    { name: "never answers", tasks: Math.min(n, 300), model: () => ({ failureRate: 1, faults: { hang: 1 } }) }
  ]
  const scenarios = only.length === 0 ? all : all.filter((scenario) => only.includes(scenario.name))
  // warm-up, not reported: the first run of a stack would otherwise pay for the JIT
  console.error("warming up (200 tasks fault-free through each stack, not reported)...")
  const warm = makeTasks(200)
  await ours(warm, {})
  await cockatiel(warm, {}, true)
  let baseline = 0
  const rows: Array<string> = []
  const floorRows: Array<string> = []
  for (const scenario of scenarios) {
    const tasks = makeTasks(scenario.tasks)
    const model = scenario.model(baseline)
    // the floor of a fault rate (an outage's plan depends on when calls come, so none for it)
    const floor = model.outage === undefined && model.faults === undefined
      ? await FaultFloor.floor(tasks, { seed: 7, ...model }, {
        concurrency,
        timeout,
        maxAttempts: Retry.defaults.maxAttempts,
        maxTokens: AgentService.defaults.maxTokens
      })
      : undefined
    const virtual = floor === undefined ? undefined : await oursVirtual(tasks, model)
    const against: Array<string> = []
    for (const run of [() => ours(tasks, model), () => cockatiel(tasks, model, false), () => cockatiel(tasks, model, true)]) {
      const outcome = await run()
      if (floor !== undefined) {
        against.push(
          outcome.cutOff
            ? `cut off (${((outcome.succeeded / scenario.tasks) * 100).toFixed(1)}%)`
            : `${outcome.lastRecordSeconds.toFixed(1)} s, ${(outcome.lastRecordSeconds * 1000 / floor.floorMillis).toFixed(2)}× (${((outcome.succeeded / scenario.tasks) * 100).toFixed(1)}%)`
        )
      }
      if (scenario.name === "fault-free" && outcome.stack.startsWith("wiz")) baseline = outcome.lastRecordSeconds
      const failures = [...outcome.failedByTag].sort((a, b) => b[1] - a[1]).map(([tag, count]) => `${tag} ${count}`).join(", ")
      const row = [
        scenario.name,
        `${scenario.tasks}`,
        outcome.stack,
        `${((outcome.succeeded / scenario.tasks) * 100).toFixed(1)}%`,
        // no ratio when the fault-free scenario was not among those run
        baseline === 0 ? "–" : outcome.cutOff ? `> ${(capSeconds / baseline).toFixed(1)}×` : `${(outcome.lastRecordSeconds / baseline).toFixed(2)}×`,
        outcome.succeeded === 0 ? "–" : (outcome.calls / outcome.succeeded).toFixed(2),
        outcome.cutOff ? `cut off at ${capSeconds} s` : `${outcome.lastRecordSeconds.toFixed(1)} s`,
        failures === "" ? "" : failures
      ]
      console.error(`  ${row.join(" | ")}`)
      rows.push(`| ${row.join(" | ")} |`)
    }
    if (floor !== undefined) {
      const plan = `${floor.calls} calls, ${floor.hangs} hangs, ${floor.retryAfters} Retry-After (${(floor.retryAfterMillis / 1000).toFixed(0)} s), ` +
        `busy ${(floor.busyMillis / 1000).toFixed(0)} s ÷ ${concurrency} = ${(floor.busyMillis / concurrency / 1000).toFixed(2)} s, ` +
        `longest chain ${(floor.longestChainMillis / 1000).toFixed(2)} s`
      const row = [
        scenario.name,
        plan,
        `${(floor.floorMillis / 1000).toFixed(2)} s`,
        `${virtual!.toFixed(2)} s, ${(virtual! * 1000 / floor.floorMillis).toFixed(2)}×`,
        ...against
      ]
      console.error(`  floor: ${row.join(" | ")}`)
      floorRows.push(`| ${row.join(" | ")} |`)
    }
  }
  console.log("")
  console.log(`Goodput under faults (concurrency ${concurrency}, timeout ${timeout}; ratio: makespan ÷ our fault-free makespan, ${baseline === 0 ? "not run" : `${baseline.toFixed(1)} s`})`)
  console.log("")
  console.log("| scenario | tasks | stack | succeeded | makespan | calls per success | last record | failed by error |")
  console.log("|---|---:|---|---:|---:|---:|---:|---|")
  for (const row of rows) console.log(row)
  if (floorRows.length > 0) {
    console.log("")
    console.log(`Against the floor (the least possible makespan of the same seed's fault plan, ${Retry.defaults.maxAttempts} attempts at most; makespan, ÷ floor, succeeded)`)
    console.log("")
    console.log("| scenario | the faults' plan | floor | wiz-effect, virtual time | wiz-effect | cockatiel, its README's wrap | cockatiel + timeout |")
    console.log("|---|---|---:|---:|---:|---:|---:|")
    for (const row of floorRows) console.log(row)
  }
  process.exit(0)
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
