/**
 * Success-path cost per call of each policy and of the whole AgentService stack, against
 * cockatiel measured in the same run, plus the many-waiters case that made us write our own
 * Bulkhead. Run with `npm run bench -- overhead` (a few seconds); numbers are medians of repeated rounds.
 *
 * What it measures is overhead: the model answers at once, so every microsecond is policy code.
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
import { Effect, Layer, Scope } from "effect"
import { AgentService, AgentTask, AiModel, Bulkhead, CircuitBreaker, Retry, Timeout } from "../src/index.js"
import { completion, effectSequential, instantModel, perCall, promiseSequential, request } from "./measure.js"

/** `callers` at once, each through `limit` on a body that yields once. */
const effectContended = (
  callers: number,
  makeLimit: Effect.Effect<<A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>>
) => {
  const run = Effect.flatMap(makeLimit, (limit) =>
    Effect.forEach(Array.from({ length: callers }), () => limit(Effect.yieldNow()), {
      concurrency: "unbounded",
      discard: true
    }))
  return perCall(callers, () => Effect.runPromise(run))
}

const promiseContended = (callers: number, limit: (f: () => Promise<unknown>) => Promise<unknown>) =>
  perCall(
    callers,
    () => Promise.all(Array.from({ length: callers }, () => limit(() => new Promise((r) => setImmediate(r)))))
  )

const main = async () => {
  const calls = 20_000
  const rows: Array<[string, number, string?]> = []
  const row = (name: string, us: number, peer?: string) => {
    rows.push(peer === undefined ? [name, us] : [name, us, peer])
    console.error(`  ${name}: ${us.toFixed(2)} µs`)
  }

  console.error("measuring (success path, sequential)...")
  const base = await effectSequential(calls, instantModel.generate(request))
  row("Effect: model call alone", base)
  const retry = Retry.make()
  row("Effect: Retry.apply", await effectSequential(calls, retry.apply(instantModel.generate(request))))
  const breaker = await Effect.runPromise(CircuitBreaker.make())
  row("Effect: CircuitBreaker.execute", await effectSequential(calls, breaker.execute(instantModel.generate(request))))
  const bulkhead = await Effect.runPromise(Bulkhead.make({ permits: 8 }))
  row("Effect: Bulkhead.withPermit", await effectSequential(calls, bulkhead.withPermit(instantModel.generate(request))))
  const semaphore = await Effect.runPromise(Effect.makeSemaphore(8))
  row("Effect: built-in Semaphore.withPermits(1)", await effectSequential(calls, semaphore.withPermits(1)(instantModel.generate(request))))
  const timeout = Timeout.attempt({ duration: "30 seconds", model: "instant" })
  row("Effect: Timeout.attempt", await effectSequential(calls, timeout(instantModel.generate(request))))
  const lean = retry.apply(breaker.execute(bulkhead.withPermit(instantModel.generate(request))))
  row("Effect: retry(breaker(permit(model)))", await effectSequential(calls, lean), "cockatiel: wrap(retry, breaker, bulkhead)")
  const full = retry.apply(breaker.execute(bulkhead.withPermit(timeout(instantModel.generate(request)))))
  row(
    "Effect: retry(breaker(permit(timeout(model))))",
    await effectSequential(calls, full),
    "cockatiel: wrap(retry, breaker, bulkhead, timeout)"
  )
  // The service lives in a scope the benchmark never closes.
  const service = await Effect.runPromise(
    Effect.flatMap(Scope.make(), (scope) => Scope.extend(AgentService.make(), scope)).pipe(
      Effect.provide(Layer.succeed(AiModel.AiModel, instantModel))
    )
  )
  const task = new AgentTask.AgentTask({ id: "t", prompt: "p" })
  row(
    "Effect: AgentService.process (all of it: events, metrics, spans)",
    await effectSequential(calls, service.process(task)),
    "cockatiel: wrap(retry, breaker, bulkhead, timeout)"
  )

  const instant = () => Promise.resolve(completion)
  const cRetry = cockatielRetry(handleAll, { maxAttempts: 3, backoff: new ExponentialBackoff() })
  const cBreaker = circuitBreaker(handleAll, { halfOpenAfter: 30_000, breaker: new ConsecutiveBreaker(5) })
  const cBulkhead = cockatielBulkhead(8, Infinity)
  const cTimeout = cockatielTimeout(30_000, TimeoutStrategy.Cooperative)
  row("cockatiel: model call alone", await promiseSequential(calls, instant))
  const cLean = wrap(cRetry, cBreaker, cBulkhead)
  row("cockatiel: wrap(retry, breaker, bulkhead)", await promiseSequential(calls, () => cLean.execute(instant)))
  const cFull = wrap(cRetry, cBreaker, cBulkhead, cTimeout)
  row("cockatiel: wrap(retry, breaker, bulkhead, timeout)", await promiseSequential(calls, () => cFull.execute(instant)))

  console.error("measuring (1,000 callers on 3 permits)...")
  const callers = 1000
  row(
    "Effect: Bulkhead, 1,000 waiting on 3",
    await effectContended(callers, Effect.map(Bulkhead.make({ permits: 3 }), (b) => b.withPermit)),
    "cockatiel: bulkhead, 1,000 waiting on 3"
  )
  row(
    "Effect: built-in Semaphore, 1,000 waiting on 3",
    await effectContended(callers, Effect.map(Effect.makeSemaphore(3), (s) => s.withPermits(1))),
    "cockatiel: bulkhead, 1,000 waiting on 3"
  )
  const cQueued = cockatielBulkhead(3, Infinity)
  row("cockatiel: bulkhead, 1,000 waiting on 3", await promiseContended(callers, (f) => cQueued.execute(f)))

  const byName = new Map(rows.map(([name, us]) => [name, us]))
  console.log("")
  console.log("| case | µs per call | vs peer |")
  console.log("|---|---:|---|")
  for (const [name, us, peer] of rows) {
    const peerUs = peer === undefined ? undefined : byName.get(peer)
    const ratio = peerUs === undefined ? "" : `${(us / peerUs).toFixed(1)}× ${peer}`
    console.log(`| ${name} | ${us.toFixed(2)} | ${ratio} |`)
  }
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
