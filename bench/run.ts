/**
 * `npm run bench [section ...]`: runs the benchmark sections, each in a fresh Node process (so
 * one section's heap, JIT state and timers never colour another's), and prints their tables.
 * With no section named, every one runs except the slow ones (`degrade` runs whole batches in
 * real time: about ten minutes; `flow` about half a minute, `memory` and `hostile` a minute); name them to
 * run them.
 *
 *   npm run bench                 # the quick sections
 *   npm run bench -- degrade      # goodput under provider faults
 *   npm run bench -- flow memory  # token budget, adaptive concurrency, heap per waiting task
 *   npm run bench -- hostile      # peak RSS of wiz against a hostile server
 *   npm run bench -- shared       # four processes on one key, with and without --redis
 *   npm run bench -- gateway      # wiz serve's added latency and its HTTP stack's, memory per stream, faults (four and a half minutes)
 *   npm run bench -- replicas     # two wiz serve on one TPM-limited upstream, with and without --redis
 *   npm run bench -- durable      # durable batches on SQLite and PostgreSQL, kill -9 chaos (many minutes)
 *   npm run bench -- all          # everything
 */
import { spawnSync } from "node:child_process"

interface Section {
  readonly file: string
  readonly what: string
  readonly slow?: boolean
}

const sections: Record<string, Section> = {
  overhead: { file: "overhead.ts", what: "success-path cost per call of each policy and of AgentService, against cockatiel" },
  lean: { file: "lean.ts", what: "what AgentService costs around a call, and its heap per in-flight task, against cockatiel" },
  patterns: { file: "patterns.ts", what: "coalescing, memoization and the model pool, against the seed's code" },
  streams: { file: "streams.ts", what: "streaming answers per chunk, and the event bus with 1, 10 and 100 subscribers" },
  http: { file: "openai-compatible.ts", what: "the OpenAI-compatible client against the official openai package, on loopback", slow: true },
  degrade: { file: "degrade.ts", what: "goodput under provider faults, against cockatiel", slow: true },
  flow: { file: "flow.ts", what: "goodput at a token limit and adaptive concurrency, in virtual time, against retry alone and cockatiel", slow: true },
  memory: { file: "memory.ts", what: "heap per task waiting on the bulkhead or the token budget, against cockatiel and p-limit", slow: true },
  hostile: { file: "hostile.ts", what: "peak RSS of wiz run and wiz ask from source against a hostile server (issue 18)", slow: true },
  shared: {
    file: "shared.ts",
    what: "four wiz run processes on one key with and without --redis, a Redis outage mid-run, and the Redis store's overhead (issue 19)",
    slow: true
  },
  gateway: { file: "gateway.ts", what: "wiz serve: latency added at 200 streams and 1,000 requests/s, memory per stream, upstream faults (issue 21)", slow: true },
  replicas: {
    file: "gateway-replicas.ts",
    what: "two wiz serve in front of one upstream with a TPM limit, with and without --redis: the upstream's 429s (issue 21)",
    slow: true
  },
  durable: {
    file: "durable.ts",
    what: "durable batches: SQLite against memory, 3 PostgreSQL workers against 1, failover and chaos with kill -9 (issue 20)",
    slow: true
  }
}

const asked = process.argv.slice(2)
const names = asked.length === 0
  ? Object.keys(sections).filter((name) => !sections[name]!.slow)
  : asked.includes("all")
  ? Object.keys(sections)
  : asked
let failed = false
for (const name of names) {
  const section = sections[name]
  if (section === undefined) {
    console.error(`bench: no section "${name}"; sections: ${Object.keys(sections).join(", ")}, all`)
    process.exit(2)
  }
  console.log(`\n## ${name}: ${section.what}\n`)
  const run = spawnSync(process.execPath, ["--import", "tsx", new URL(section.file, import.meta.url).pathname], {
    stdio: "inherit"
  })
  if (run.status !== 0) {
    console.error(`bench: section ${name} failed (exit ${run.status ?? run.signal})`)
    failed = true
  }
}
process.exit(failed ? 1 : 0)
