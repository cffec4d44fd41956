/**
 * What `AgentService` itself costs around a model call, beside cockatiel's composed stack
 * `wrap(retry, circuitBreaker, bulkhead, timeout)` measured in the same run:
 *
 * - µs per task, sequentially and with 1,000 tasks in flight on 64 permits, for
 *   `AgentService.process` with its default policies (and with `coalesce` on, every task a
 *   miss: what coalescing costs on the hot path), for its shell alone (retry, breaker, budget
 *   and timeout all off) and for a bare model call;
 * - live heap per in-flight task with 100,000 tasks in flight, all of them on the wire (as many
 *   permits as tasks; the model never answers), each variant in a fresh Node process started
 *   with `--expose-gc`.
 *
 * The model answers through a real promise (`Effect.promise(() => Promise.resolve(...))`), as a
 * provider's client would, so every variant pays one microtask per call.
 *
 *   npm run bench -- lean
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
import { Duration, Effect, Layer, Scope, Stream } from "effect"
import { spawnSync } from "node:child_process"
import { AgentService, AgentTask, AiModel } from "../src/index.js"
import { completion, median, perCall } from "./measure.js"

const calls = 20_000
const inFlight = 1_000
const permits = 64

/** A model answering through a real promise; `never` makes one that never answers. */
/**
 * Calls on the wire: a promise that never settles, its resolver held here as a socket would hold
 * it (without a holder, a task that waits on nothing else is garbage and a full GC may collect
 * it, so the heap figure came out anywhere from 0.1 to 11.5 KB per task). The heap child waits
 * until every task has one.
 */
const wire: Array<(completion: AiModel.Completion) => void> = []
const never = () => new Promise<AiModel.Completion>((resolve) => wire.push(resolve))

const promiseModel = (hang = false): AiModel.AiModel.Service => ({
  name: "instant",
  generate: () => Effect.promise(() => hang ? never() : Promise.resolve(completion)),
  stream: () => Stream.empty
})

const tasks = Array.from({ length: calls }, (_, i) => new AgentTask.AgentTask({ id: `t${i}`, prompt: "p" }))
/** Each its own prompt: with coalescing on, every task is a miss. */
const distinct = tasks.map((task, i) => new AgentTask.AgentTask({ id: task.id, prompt: `p${i}` }))

const service = (options: AgentService.Options, hang = false) =>
  Effect.runPromise(
    Effect.flatMap(Scope.make(), (scope) => Scope.extend(AgentService.make({ concurrency: permits, ...options }), scope)).pipe(
      Effect.provide(Layer.succeed(AiModel.AiModel, promiseModel(hang)))
    )
  )

/** Every policy off: no retry, no breaker, no budget, no timeout, no deadline; the permit stays. */
const shellOptions: AgentService.Options = {
  retry: false,
  breaker: false,
  retryBudget: false,
  timeout: Duration.infinity,
  deadline: Duration.infinity
}

const cockatielStack = (limit = permits) =>
  wrap(
    cockatielRetry(handleAll, { maxAttempts: 3, backoff: new ExponentialBackoff() }),
    circuitBreaker(handleAll, { halfOpenAfter: 10_000, breaker: new ConsecutiveBreaker(5) }),
    cockatielBulkhead(limit, Infinity),
    cockatielTimeout(30_000, TimeoutStrategy.Aggressive)
  )

const effectRun = (
  run: (task: AgentTask.AgentTask) => Effect.Effect<unknown, unknown>,
  concurrency: number,
  batch: ReadonlyArray<AgentTask.AgentTask> = tasks
) => perCall(calls, () => Effect.runPromise(Effect.forEach(batch, run, { concurrency, discard: true })))

const promiseRun = (run: () => Promise<unknown>, concurrency: number) =>
  perCall(calls, async () => {
    for (let i = 0; i < calls; i += concurrency) {
      await Promise.all(Array.from({ length: Math.min(concurrency, calls - i) }, run))
    }
  })

// -----------------------------------------------------------------------------
// memory: one variant per process
// -----------------------------------------------------------------------------

const heapTasks = 100_000

/** In a child process: start `heapTasks` tasks that never end, and print the heap per task. */
const heapChild = async (variant: string) => {
  const gc = (globalThis as { gc?: () => void }).gc!
  const settle = async () => {
    for (let i = 0; i < 3; i++) {
      await new Promise((resolve) => setImmediate(resolve))
      gc()
    }
  }
  const list = Array.from({ length: heapTasks }, (_, i) => new AgentTask.AgentTask({ id: `t${i}`, prompt: "p" }))
  const start: () => void = await (async () => {
    switch (variant) {
      case "cockatiel": {
        // every task on the wire at once, as for ours below
        const stack = cockatielStack(heapTasks)
        return () => {
          for (let i = 0; i < heapTasks; i++) stack.execute(never).catch(() => {})
        }
      }
      case "bare": {
        const model = promiseModel(true)
        const request = new AiModel.CompletionRequest({ prompt: "p", maxTokens: 8 })
        return () => {
          for (let i = 0; i < heapTasks; i++) Effect.runFork(model.generate(request))
        }
      }
      default: {
        const agent = await service(variant === "shell" ? { ...shellOptions, concurrency: heapTasks } : { concurrency: heapTasks }, true)
        return () => {
          for (const task of list) Effect.runFork(agent.process(task))
        }
      }
    }
  })()
  await settle()
  const before = process.memoryUsage().heapUsed
  start()
  // every task on the wire before the heap is read: forked fibers start over several turns
  // (within 25 s: past the default 30 s attempt timeout, tasks would start failing and the
  // breaker would hold the rest back; a machine too busy for that gets no figure)
  const startedAt = performance.now()
  while (wire.length < heapTasks) {
    if (performance.now() - startedAt > 25_000) throw new Error(`only ${wire.length} of ${heapTasks} tasks on the wire after 25 s: the machine is too busy`)
    await new Promise((resolve) => setImmediate(resolve))
  }
  await settle()
  const after = process.memoryUsage().heapUsed
  console.log(JSON.stringify({ variant, bytesPerTask: (after - before) / heapTasks }))
  process.exit(0)
}

const heapPerTask = (variant: string): number => {
  const samples: Array<number> = []
  // one sample each: 100,000 of cockatiel's timeouts take minutes to set up
  for (let i = 0; i < 1; i++) {
    const child = spawnSync(
      process.execPath,
      ["--expose-gc", "--max-old-space-size=8192", "--import", "tsx", new URL(import.meta.url).pathname, "--heap", variant],
      { encoding: "utf8" }
    )
    const line = child.stdout.trim().split("\n").pop() ?? ""
    if (child.status !== 0 || line === "") throw new Error(`heap child ${variant} failed: ${child.stderr}`)
    samples.push((JSON.parse(line) as { bytesPerTask: number }).bytesPerTask)
  }
  return median(samples)
}

// -----------------------------------------------------------------------------
// main
// -----------------------------------------------------------------------------

const main = async () => {
  const heapArg = process.argv.indexOf("--heap")
  if (heapArg >= 0) return heapChild(process.argv[heapArg + 1]!)

  const rows: Array<readonly [string, string, string, string]> = []
  const report = (name: string, sequential: number, concurrent: number, peer: readonly [number, number] | undefined) => {
    const ratio = (us: number, base: number) => `${(us / base).toFixed(2)}×`
    rows.push([
      name,
      `${sequential.toFixed(2)}${peer === undefined ? "" : ` (${ratio(sequential, peer[0])})`}`,
      `${concurrent.toFixed(2)}${peer === undefined ? "" : ` (${ratio(concurrent, peer[1])})`}`,
      ""
    ])
    console.error(`  ${name}: ${sequential.toFixed(2)} µs sequential, ${concurrent.toFixed(2)} µs at ${inFlight} in flight`)
  }

  console.error("measuring µs per task...")
  const stack = cockatielStack()
  const instant = () => Promise.resolve(completion)
  const cockatiel = [
    await promiseRun(() => stack.execute(instant), 1),
    await promiseRun(() => stack.execute(instant), inFlight)
  ] as const
  const model = promiseModel()
  const request = new AiModel.CompletionRequest({ prompt: "p", maxTokens: 8 })
  const bare = [await effectRun(() => model.generate(request), 1), await effectRun(() => model.generate(request), inFlight)] as const
  const full = await service({})
  const shell = await service(shellOptions)
  report("cockatiel wrap(retry, breaker, bulkhead, timeout)", cockatiel[0], cockatiel[1], undefined)
  report("bare model call (Effect.promise)", bare[0], bare[1], undefined)
  report(
    "AgentService.process, default policies (vs cockatiel)",
    await effectRun(full.process, 1),
    await effectRun(full.process, inFlight),
    cockatiel
  )
  const coalescing = await service({ coalesce: true })
  report(
    "AgentService.process, default policies + coalesce, every task a miss (vs cockatiel)",
    await effectRun(coalescing.process, 1, distinct),
    await effectRun(coalescing.process, inFlight, distinct),
    cockatiel
  )
  const shellTimes = [await effectRun(shell.process, 1), await effectRun(shell.process, inFlight)] as const
  report("AgentService.process, every policy off (vs the bare call)", shellTimes[0], shellTimes[1], bare)
  console.error(`  the shell adds ${(shellTimes[0] - bare[0]).toFixed(2)} µs sequential, ${(shellTimes[1] - bare[1]).toFixed(2)} µs at ${inFlight} in flight`)

  console.error(`measuring live heap per in-flight task (${heapTasks.toLocaleString("en")} tasks, fresh process each)...`)
  const heap = {
    cockatiel: heapPerTask("cockatiel"),
    bare: heapPerTask("bare"),
    shell: heapPerTask("shell"),
    full: heapPerTask("full")
  }

  console.log("")
  console.log(`µs per task (medians); ratios against cockatiel, or for the shell against the bare call; ${permits} permits`)
  console.log("")
  console.log(`| stack | sequential | ${inFlight.toLocaleString("en")} in flight |`)
  console.log("|---|---:|---:|")
  for (const [name, sequential, concurrent] of rows) console.log(`| ${name} | ${sequential} | ${concurrent} |`)
  console.log("")
  console.log(`| live heap per in-flight task (${heapTasks.toLocaleString("en")} in flight) | KB | vs cockatiel |`)
  console.log("|---|---:|---:|")
  const kb = (bytes: number) => (bytes / 1024).toFixed(1)
  for (
    const [name, bytes] of [
      ["cockatiel wrap(retry, breaker, bulkhead, timeout)", heap.cockatiel],
      ["bare Effect.promise fiber", heap.bare],
      ["AgentService.process, every policy off", heap.shell],
      ["AgentService.process, default policies", heap.full]
    ] as const
  ) {
    console.log(`| ${name} | ${kb(bytes)} | ${(bytes / heap.cockatiel).toFixed(2)}× |`)
  }
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
