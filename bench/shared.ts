/**
 * Issue 19: several `wiz run` processes on one API key, with and without `--redis`.
 *
 * A loopback OpenAI-compatible provider (in this process) with real limits
 * (`test/support/LimitedProvider.ts`): token buckets for tokens (TPM) and requests (RPM), a
 * 429 with OpenAI's `x-ratelimit-*` headers and `retry-after-ms` past them, the same headers on
 * every answer. It starts with 10% of each minute left, as a key other work was using; so the least possible makespan is close to the floor
 * (`max(total tokens / TPM, requests / RPM)`), and both are printed.
 *
 * 1. Four `wiz run` processes (from source, `--model openai-compatible`, default options) of
 *    500 mixed tasks each (prompts of 5–40 words, `maxTokens` 16–128, answers 40–100% of it),
 *    all at once, without `--redis` and then with it: the 429 share, the makespan (the
 *    provider's first request to its last answer) against the floor, the failed records.
 * 2. The same four with `--redis` on a redis-server this script starts on a spare port,
 *    stopped 6 s into the run and started again 4 s later: every task must have exactly one
 *    record, none failed.
 * 3. Overhead: `AgentService.process` against a model that answers at once, 64 in flight,
 *    with the in-memory store and with the Redis store (the machine's Redis, or the one started
 *    here): p50 and p99 per call, and the ratio.
 *
 *   npm run bench -- shared        (about four minutes)
 *   npx tsx bench/shared.ts 100    (fewer tasks per process)
 *   npx tsx bench/shared.ts overhead
 */
import { type ChildProcess, spawn } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import * as Net from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { performance } from "node:perf_hooks"
import { Effect, Layer } from "effect"
import { AgentService, AgentTask, AiModel } from "../src/index.js"
import * as Tokenizer from "../src/model/Tokenizer.js"
import * as RedisStore from "../src/store/RedisStore.js"
import * as LimitedProvider from "../test/support/LimitedProvider.js"

const main = fileURLToPath(new URL("../src/cli/main.ts", import.meta.url))
const TPM = 120_000
const RPM = 2_000
const PROCESSES = 4
const onlyOverhead = process.argv[2] === "overhead"
const TASKS = onlyOverhead ? 0 : Number(process.argv[2] ?? 500)

const startProvider = () => LimitedProvider.start({ tpm: TPM, rpm: RPM })

// -----------------------------------------------------------------------------
// the processes
// -----------------------------------------------------------------------------

const words = "the quick brown fox jumps over a lazy dog while seven wizards quietly brew strong coffee".split(" ")

/** `n` mixed tasks for process `p`: prompts of 5–40 words, maxTokens 16–128. */
const taskFile = (dir: string, p: number, n: number) => {
  let seed = 1_000 + p
  const random = () => (seed = (seed * 1_103_515_245 + 12_345) % 2_147_483_648) / 2_147_483_648
  const lines = Array.from({ length: n }, (_, i) => {
    const length = 5 + Math.floor(random() * 36)
    const prompt = Array.from({ length }, () => words[Math.floor(random() * words.length)]).join(" ")
    const maxTokens = [16, 32, 64, 128][Math.floor(random() * 4)]!
    return JSON.stringify({ id: `p${p}-t${i}`, prompt: `${prompt} ${p}.${i}`, maxTokens })
  })
  const path = join(dir, `tasks-${p}.jsonl`)
  writeFileSync(path, lines.join("\n") + "\n")
  return path
}

const runWiz = (input: string, output: string, url: string, redis: string | undefined, events?: string) =>
  new Promise<{ code: number | null; stderr: string; child: ChildProcess }>((resolve) => {
    const child = spawn(process.execPath, [
      "--import",
      "tsx",
      main,
      "run",
      input,
      "--output",
      output,
      "--no-progress",
      "--model",
      "openai-compatible",
      "--base-url",
      url,
      "--model-name",
      "bench",
      "--api-key-env",
      "BENCH_KEY",
      ...(redis === undefined ? [] : ["--redis", redis]),
      ...(events === undefined ? [] : ["--events", events])
    ], { env: { ...process.env, BENCH_KEY: "sk-bench-one-key" }, stdio: ["ignore", "ignore", "pipe"] })
    let stderr = ""
    child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString("utf8")))
    child.on("exit", (code) => resolve({ code, stderr, child }))
  })

interface Batch {
  readonly label: string
  readonly requests: number
  readonly refused: number
  readonly makespan: number
  readonly floor: number
  readonly strictFloor: number
  readonly records: number
  readonly failed: number
  readonly duplicates: number
  readonly missing: number
  readonly summary: string
  /** `StoreStatus` events of the processes: went local, back on Redis. */
  readonly local: number
  readonly shared: number
}

const batch = async (label: string, tasks: number, redis: string | undefined, during?: () => Promise<void>): Promise<Batch> => {
  const dir = mkdtempSync(join(tmpdir(), "wiz-shared-"))
  const provider = await startProvider()
  try {
    const inputs = Array.from({ length: PROCESSES }, (_, p) => taskFile(dir, p, tasks))
    const runs = inputs.map((input, p) => runWiz(input, join(dir, `out-${p}.jsonl`), provider.url, redis, join(dir, `events-${p}.jsonl`)))
    await during?.()
    const exits = await Promise.all(runs)
    const seen = new Map<string, number>()
    let failed = 0
    for (let p = 0; p < PROCESSES; p++) {
      for (const line of readFileSync(join(dir, `out-${p}.jsonl`), "utf8").split("\n").filter((l) => l.trim())) {
        const record = JSON.parse(line) as { id: string; status: string }
        seen.set(record.id, (seen.get(record.id) ?? 0) + 1)
        if (record.status !== "succeeded") failed++
      }
    }
    let local = 0
    let back = 0
    for (let p = 0; p < PROCESSES; p++) {
      for (const line of readFileSync(join(dir, `events-${p}.jsonl`), "utf8").split("\n")) {
        if (!line.includes('"StoreStatus"')) continue
        if (line.includes('"local"')) local++
        else back++
      }
    }
    const s = provider.stats
    const minutes = Math.max(s.tokens / TPM, s.answered / RPM)
    const strict = Math.max((s.tokens - TPM / 10) / TPM, (s.answered - RPM / 10) / RPM)
    const bad = exits.filter((exit) => exit.code !== 0)
    if (bad.length > 0) console.error(`${label}: ${bad.length} processes exited non-zero:\n${bad[0]!.stderr}`)
    const sharedLine = exits.map((exit) => exit.stderr.split("\n").find((line) => line.startsWith("budget      shared")) ?? "").find((l) => l) ?? ""
    return {
      label,
      requests: s.requests,
      refused: s.refused,
      makespan: (s.last - s.first) / 1000,
      floor: minutes * 60,
      strictFloor: strict * 60,
      records: [...seen.values()].reduce((a, b) => a + b, 0),
      failed,
      duplicates: [...seen.values()].filter((n) => n > 1).length,
      missing: PROCESSES * tasks - seen.size,
      summary: sharedLine.replace(/^budget\s+/, ""),
      local,
      shared: back
    }
  } finally {
    await provider.close()
    rmSync(dir, { recursive: true, force: true })
  }
}

const printBatches = (rows: ReadonlyArray<Batch>) => {
  console.log("| run | requests | 429s | 429 share | makespan | floor (issue) | × floor | least possible | × least | records | failed | dup/missing | summary |")
  console.log("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
  for (const r of rows) {
    console.log(
      `| ${r.label} | ${r.requests} | ${r.refused} | ${(100 * r.refused / r.requests).toFixed(2)}% | ${r.makespan.toFixed(1)} s | ` +
        `${r.floor.toFixed(1)} s | ${(r.makespan / r.floor).toFixed(2)} | ${r.strictFloor.toFixed(1)} s | ${(r.makespan / r.strictFloor).toFixed(2)} | ` +
        `${r.records} | ${r.failed} | ${r.duplicates}/${r.missing} | ${r.summary} |`
    )
  }
}

// -----------------------------------------------------------------------------
// our own redis-server, for the outage
// -----------------------------------------------------------------------------

const freePort = () =>
  new Promise<number>((resolve) => {
    const server = Net.createServer()
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as Net.AddressInfo
      server.close(() => resolve(port))
    })
  })

const answers = (port: number) =>
  new Promise<boolean>((resolve) => {
    const socket = Net.connect({ host: "127.0.0.1", port })
    socket.once("connect", () => (socket.destroy(), resolve(true)))
    socket.once("error", () => resolve(false))
  })

const startRedis = async (port: number): Promise<ChildProcess> => {
  const child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
    stdio: "ignore"
  })
  for (let i = 0; i < 100 && !(await answers(port)); i++) await new Promise((r) => setTimeout(r, 50))
  return child
}

const stopRedis = (child: ChildProcess) =>
  new Promise<void>((resolve) => {
    child.once("exit", () => resolve())
    child.kill("SIGKILL")
  })

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

// -----------------------------------------------------------------------------
// overhead
// -----------------------------------------------------------------------------

const instant: AiModel.AiModel.Service = AiModel.make({
  name: "instant",
  generate: (request) =>
    Effect.succeed(new AiModel.Completion({
      text: "ok",
      finishReason: "stop",
      model: "instant",
      usage: new AiModel.Usage({ promptTokens: Tokenizer.count(request.prompt), completionTokens: 1 })
    }))
})

const overhead = async (redisUrl: string) => {
  const calls = 20_000
  const measure = (store: Layer.Layer<never> | ReturnType<typeof RedisStore.layer>) =>
    Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const agent = yield* AgentService.make({ concurrency: 64, retry: false, tokenBudget: { limits: { tokens: 1e12, requests: 1e12 } } })
      const latencies: Array<number> = []
      const run = (i: number) =>
        Effect.suspend(() => {
          const start = performance.now()
          return Effect.map(agent.process(new AgentTask.AgentTask({ id: `o${i}`, prompt: `question ${i}`, maxTokens: 16 })), () => {
            latencies.push(performance.now() - start)
          })
        })
      yield* Effect.forEach(Array.from({ length: 2_000 }, (_, i) => i), run, { concurrency: 64, discard: true }) // warm-up
      latencies.length = 0
      const started = performance.now()
      yield* Effect.forEach(Array.from({ length: calls }, (_, i) => i), run, { concurrency: 64, discard: true })
      const wall = performance.now() - started
      latencies.sort((a, b) => a - b)
      return { p50: latencies[Math.floor(calls * 0.5)]!, p99: latencies[Math.floor(calls * 0.99)]!, perSecond: calls / (wall / 1000) }
    }).pipe(Effect.provide(Layer.merge(store, Layer.succeed(AiModel.AiModel, instant))))))
  const memory = await measure(Layer.empty)
  const redis = await measure(RedisStore.layer({ url: redisUrl, prefix: `wiz-bench-${process.pid}` }))
  console.log("| store | p50 per call | p99 per call | calls/s |")
  console.log("|---|---:|---:|---:|")
  console.log(`| in memory | ${memory.p50.toFixed(3)} ms | ${memory.p99.toFixed(3)} ms | ${memory.perSecond.toFixed(0)} |`)
  console.log(`| Redis (loopback) | ${redis.p50.toFixed(3)} ms | ${redis.p99.toFixed(3)} ms | ${redis.perSecond.toFixed(0)} |`)
  console.log(
    `\nadded by Redis: p50 +${(redis.p50 - memory.p50).toFixed(3)} ms, p99 +${(redis.p99 - memory.p99).toFixed(3)} ms; ` +
      `ratio to in-memory: p50 ${(redis.p50 / memory.p50).toFixed(1)}x, p99 ${(redis.p99 / memory.p99).toFixed(1)}x, ` +
      `throughput ${(redis.perSecond / memory.perSecond).toFixed(2)}x`
  )
}

// -----------------------------------------------------------------------------

const port = await freePort()
let redis = await startRedis(port)
const redisUrl = `redis://127.0.0.1:${port}`
try {
  if (!onlyOverhead) await batches()
  console.log(`AgentService.process, 64 in flight, a model that answers at once, 20,000 calls:\n`)
  await overhead(redisUrl)
} finally {
  await stopRedis(redis)
}

async function batches() {
  console.log(`provider: TPM ${TPM}, RPM ${RPM} (10% left at the start); ${PROCESSES} wiz run processes x ${TASKS} tasks, one key\n`)
  const rows: Array<Batch> = []
  rows.push(await batch("without --redis", TASKS, undefined))
  rows.push(await batch("with --redis", TASKS, redisUrl))
  printBatches(rows)

  console.log(`\nRedis stopped 6 s into the run (SIGKILL) and started again 4 s later; ${PROCESSES} x 250 tasks with --redis:\n`)
  const outage = await batch("redis down 6 s..10 s", 250, redisUrl, async () => {
    await sleep(6_000)
    await stopRedis(redis)
    await sleep(4_000)
    redis = await startRedis(port)
  })
  printBatches([outage])
  console.log(
    `\nevery task exactly one record: ${outage.duplicates === 0 && outage.missing === 0 ? "yes" : "NO"}; failed: ${outage.failed}; ` +
      `StoreStatus events: ${outage.local} to local, ${outage.shared} back to Redis (over ${PROCESSES} processes)\n`
  )
}
