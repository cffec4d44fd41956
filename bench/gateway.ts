/**
 * `npm run bench -- gateway`: what `wiz serve` adds on loopback, and what a client sees of
 * upstream faults through it (issue 21). About four and a half minutes.
 *
 * Three processes' worth of work: the upstream is a bare `node:http` OpenAI-compatible server
 * in a worker thread of this process (told by message what faults to inject); `wiz serve` runs
 * from source as a child process (`--model openai-compatible` on that upstream, its one JSON
 * log line per request written to a pipe, as in production); the load is this process's
 * `fetch`. Every latency is measured twice at the same load, once against the upstream
 * directly and once through the gateway: the figure is the difference of the percentiles.
 *
 * - **Capacity**, and a load this machine sustains (50 whole requests/s, 20 concurrent streams),
 *   so the added latency is seen apart from queueing when the machine is past its capacity.
 * - **200 concurrent streams**: 200 clients each streaming answers of 20 chunks back to back,
 *   for 6 s: added p50 and p99 of the whole answer. Twice: the upstream writing a chunk every
 *   25 ms (40 tokens a second, what providers stream: 8,000 chunks a second through the
 *   gateway), the headline; and every 5 ms (40,000 chunks a second, a rate no provider streams
 *   at, kept as the stress row). Both keep the issue's definition: the difference of the
 *   percentiles, directly and through the gateway, at the same load.
 * - **CPU**: the gateway process's own CPU time (from /proc) per whole answer and per streamed
 *   answer (and per chunk) in those runs, which says what the machine's cores must give at a
 *   load, apart from the queueing a loaded machine adds; the load average is printed with it.
 * - **1,000 whole requests/s**: an open loop (a request every millisecond, whatever is in
 *   flight) for 5 s, the upstream answering at once: added p50 and p99.
 * - **The HTTP stack's share**: the least gateway (`internal/floorProxy.ts`: forward, read and
 *   write again, nothing else) on `@effect/platform` and on `node:http` alone, each in its own
 *   process, at the 200-stream and 1,000 requests/s loads and with its CPU per request and per
 *   stream, so what `wiz serve` adds is set beside what its HTTP stack adds with nothing on top.
 * - **Memory per open stream**: a fresh gateway's RSS and heap with 1,000 streams held open by a
 *   stalled upstream, over its RSS and heap idle, per stream, its garbage collected before each
 *   reading (`bench/internal/gcOnSignal.ts`).
 * - **Faults**: 20% of upstream answers a transient 503 and a 5 s outage (every answer 503) in
 *   the middle of a 12 s run at 50 requests/s; the client makes one attempt (its own retries
 *   off). Then streams cut mid-answer by the upstream (a connection dropped after 5 of 20
 *   chunks, one in four): each must reach the client as a whole answer or an SSE error, never
 *   as a clean `finish_reason` on a short answer.
 *
 * On a shared 2-core machine, where the upstream, the gateway and the load share the cores,
 * the figures move from run to run; they are what the machine gave, not a floor.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import { readFileSync } from "node:fs"
import { loadavg } from "node:os"
import { createRequire } from "node:module"
import { performance } from "node:perf_hooks"
import { fileURLToPath, pathToFileURL } from "node:url"
import { Worker } from "node:worker_threads"

const serverCode = `
const http = require("node:http")
const { parentPort } = require("node:worker_threads")
let mode = { faultRate: 0, outage: false, cutRate: 0, chunkDelay: 5, stall: false }
parentPort.on("message", (m) => { mode = { ...mode, ...m }; parentPort.postMessage("ok") })
const words = Array.from({ length: 20 }, (_, i) => "word" + i)
const text = words.join(" ")
const base = { id: "chatcmpl-up", object: "chat.completion.chunk", created: 1, model: "up" }
const whole = JSON.stringify({
  id: "chatcmpl-up", object: "chat.completion", created: 1, model: "up",
  choices: [{ index: 0, message: { role: "assistant", content: text }, finish_reason: "stop" }],
  usage: { prompt_tokens: 12, completion_tokens: 20, total_tokens: 32 }
})
const event = (o) => "data: " + JSON.stringify(o) + "\\n\\n"
const held = []
const server = http.createServer({ keepAliveTimeout: 60000 }, (req, res) => {
  const parts = []
  req.on("data", (d) => parts.push(d))
  req.on("end", () => {
    if (mode.outage || Math.random() < mode.faultRate) {
      const body = JSON.stringify({ error: { message: "overloaded", type: "server_error", code: null } })
      res.writeHead(503, { "content-type": "application/json", "content-length": Buffer.byteLength(body) })
      return res.end(body)
    }
    const stream = Buffer.concat(parts).includes('"stream":true')
    if (!stream) {
      res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(whole) })
      return res.end(whole)
    }
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" })
    res.write(event({ ...base, choices: [{ index: 0, delta: { role: "assistant", content: "" }, finish_reason: null }] }))
    if (mode.stall) { held.push(res); return }
    const cut = Math.random() < mode.cutRate ? 5 : -1
    let i = 0
    const next = () => {
      if (res.destroyed) return
      if (i === cut) return res.destroy()
      if (i < words.length) {
        res.write(event({ ...base, choices: [{ index: 0, delta: { content: (i === 0 ? "" : " ") + words[i] }, finish_reason: null }] }))
        i++
        return mode.chunkDelay > 0 ? setTimeout(next, mode.chunkDelay) : next()
      }
      res.write(event({ ...base, choices: [{ index: 0, delta: {}, finish_reason: "stop" }] }))
      res.write(event({ ...base, choices: [], usage: { prompt_tokens: 12, completion_tokens: 20, total_tokens: 32 } }))
      res.end("data: [DONE]\\n\\n")
    }
    next()
  })
})
server.listen(0, "127.0.0.1", () => parentPort.postMessage(server.address().port))
`

interface Upstream {
  readonly url: string
  readonly set: (mode: Record<string, unknown>) => Promise<void>
  readonly stop: () => Promise<number>
}

const startUpstream = () =>
  new Promise<Upstream>((resolve, reject) => {
    const worker = new Worker(serverCode, { eval: true })
    worker.once("message", (port: number) =>
      resolve({
        url: `http://127.0.0.1:${port}/v1`,
        set: (mode) =>
          new Promise((done) => {
            worker.once("message", () => done())
            worker.postMessage(mode)
          }),
        stop: () => worker.terminate()
      }))
    worker.once("error", reject)
  })

const main = fileURLToPath(new URL("../src/cli/main.ts", import.meta.url))
const tsx = pathToFileURL(createRequire(import.meta.url).resolve("tsx")).href

interface Child {
  readonly url: string
  readonly child: ChildProcess
  readonly rssKb: () => number
  /** CPU time the process has used, in ms (user + system). */
  readonly cpuMs: () => number
  /** Collect its garbage (a gateway started with {@link gcOnSignal} only). */
  readonly collect: () => Promise<void>
  readonly stop: () => Promise<number | null>
}

const gcOnSignal = pathToFileURL(fileURLToPath(new URL("./internal/gcOnSignal.ts", import.meta.url))).href
const floorProxy = fileURLToPath(new URL("./internal/floorProxy.ts", import.meta.url))

/** A TypeScript entry point run from source as a child process, once it says where it listens. */
const startChild = (args: ReadonlyArray<string>, nodeOptions: ReadonlyArray<string> = []) =>
  new Promise<Child>((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", tsx, ...nodeOptions, ...args], { stdio: ["ignore", "ignore", "pipe"] })
    let err = ""
    const timer = setTimeout(() => reject(new Error(`${args[0]} did not start: ${err}`)), 60_000)
    child.stderr!.setEncoding("utf8").on("data", (text: string) => {
      if (err.length < 10_000) err += text
      const found = /listening on (\S+)/.exec(err)
      if (found !== null && timer.hasRef()) {
        clearTimeout(timer)
        timer.unref()
        resolve({
          url: found[1]!,
          child,
          rssKb: () => Number(execFileSync("ps", ["-o", "rss=", "-p", String(child.pid)]).toString().trim()),
          cpuMs: () => {
            // /proc/PID/stat: utime and stime are fields 14 and 15, in clock ticks (100 a second)
            const fields = readFileSync(`/proc/${child.pid}/stat`, "utf8").split(") ")[1]!.split(" ")
            return (Number(fields[11]) + Number(fields[12])) * 10
          },
          collect: () =>
            new Promise((done) => {
              const seen = (text: string) => {
                if (!text.includes("gc\n")) return
                child.stderr!.off("data", seen)
                done()
              }
              child.stderr!.on("data", seen)
              child.kill("SIGUSR2")
            }),
          stop: () =>
            new Promise((done) => {
              child.once("exit", (code) => done(code))
              child.kill("SIGTERM")
            })
        })
      }
    })
    child.once("exit", (code) => reject(new Error(`${args[0]} exited ${code}: ${err}`)))
  })

const startGateway = (upstream: string, extra: ReadonlyArray<string> = [], nodeOptions: ReadonlyArray<string> = []) =>
  startChild([
    main,
    "serve",
    "--port",
    "0",
    "--model",
    "openai-compatible",
    "--base-url",
    upstream,
    "--model-name",
    "up",
    "--concurrency",
    "2000",
    "--max-queued",
    "100000",
    ...extra
  ], nodeOptions)

const messages = [{ role: "user", content: "Summarise: Effect is a TypeScript library." }]

const percentile = (xs: ReadonlyArray<number>, p: number) => {
  const sorted = [...xs].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!
}

interface Streamed {
  readonly ms: number
  readonly ok: boolean
  /** The answer ended with a finish reason. */
  readonly finished: boolean
  /** It ended with an SSE error event. */
  readonly errored: boolean
  readonly text: string
}

/** One streamed answer, read to its end, from `base`. */
const stream = async (base: string): Promise<Streamed> => {
  const start = performance.now()
  try {
    const response = await fetch(`${base}/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "up", messages, max_tokens: 64, stream: true })
    })
    const body = await response.text()
    let text = ""
    let finished = false
    let errored = false
    for (const line of body.split("\n")) {
      if (!line.startsWith("data: ") || line === "data: [DONE]") continue
      const json = JSON.parse(line.slice(6))
      if (json.error !== undefined) errored = true
      const choice = json.choices?.[0]
      if (choice?.delta?.content) text += choice.delta.content
      if (choice?.finish_reason) finished = true
    }
    return { ms: performance.now() - start, ok: response.status === 200 && finished && !errored, finished, errored, text }
  } catch {
    return { ms: performance.now() - start, ok: false, finished: false, errored: true, text: "" }
  }
}

/** The `error.code` (or `type`) of an OpenAI-shaped error body, else its first 80 characters. */
const errorCode = (body: string): string => {
  try {
    const error = JSON.parse(body).error
    return String(error?.code ?? error?.type ?? body.slice(0, 80))
  } catch {
    return body.slice(0, 80)
  }
}

/** One whole answer from `base`: its latency, whether it succeeded, and if not its error code. */
const whole = async (base: string) => {
  const start = performance.now()
  try {
    const response = await fetch(`${base}/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "up", messages, max_tokens: 64 })
    })
    const body = await response.text()
    const ok = response.status === 200 && body.includes("word19")
    return { ms: performance.now() - start, ok, status: response.status, code: ok ? undefined : errorCode(body) }
  } catch (error) {
    return { ms: performance.now() - start, ok: false, status: 0, code: String((error as Error).cause ?? error) }
  }
}

/** `clients` clients streaming back to back for `seconds`. */
const closedLoopStreams = async (base: string, clients: number, seconds: number) => {
  const end = performance.now() + seconds * 1000
  const results: Array<Streamed> = []
  await Promise.all(Array.from({ length: clients }, async () => {
    while (performance.now() < end) results.push(await stream(base))
  }))
  return results
}

/** An open loop: `perSecond` requests a second for `seconds`, whatever is in flight. */
const openLoop = async <A>(perSecond: number, seconds: number, one: () => Promise<A>) => {
  const total = perSecond * seconds
  const start = performance.now()
  const pending: Array<Promise<A>> = []
  for (let i = 0; i < total; i++) {
    const due = start + (i * 1000) / perSecond
    const wait = due - performance.now()
    if (wait > 1) await new Promise((resolve) => setTimeout(resolve, wait))
    pending.push(one())
  }
  return Promise.all(pending)
}

/** `clients` clients asking for whole answers back to back for `seconds`: answers per second. */
const closedLoop = async (base: string, clients: number, seconds: number) => {
  const end = performance.now() + seconds * 1000
  let answered = 0
  await Promise.all(Array.from({ length: clients }, async () => {
    while (performance.now() < end) if ((await whole(base)).ok) answered++
  }))
  return answered / seconds
}

/** The gateway's JS heap in use and its external memory (buffers, sockets' native parts), from its /metrics. */
const memoryOf = async (base: string) => {
  const text = await fetch(base.replace(/\/v1$/, "/metrics")).then((r) => r.text())
  const gauge = (name: string) => Number(new RegExp(`^${name} (\\d+)`, "m").exec(text)?.[1] ?? 0)
  return { heap: gauge("nodejs_heap_size_used_bytes"), external: gauge("nodejs_external_memory_bytes") }
}

const statuses = (results: ReadonlyArray<{ readonly status: number; readonly code?: string | undefined }>) => {
  const count: Record<string, number> = {}
  for (const { code, status } of results) {
    const key = code === undefined ? String(status) : `${status} ${code}`
    count[key] = (count[key] ?? 0) + 1
  }
  return count
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

const row = (name: string, direct: ReadonlyArray<number>, through: ReadonlyArray<number>) => {
  const p50 = percentile(through, 50) - percentile(direct, 50)
  const p99 = percentile(through, 99) - percentile(direct, 99)
  return `| ${name} | ${percentile(direct, 50).toFixed(2)} / ${percentile(direct, 99).toFixed(2)} | ${
    percentile(through, 50).toFixed(2)
  } / ${percentile(through, 99).toFixed(2)} | ${p50.toFixed(2)} | ${p99.toFixed(2)} |`
}

const load = () => loadavg().map((x) => x.toFixed(1)).join(" / ")

const run = async () => {
  const startLoad = load()
  const upstream = await startUpstream()
  const gateway = await startGateway(upstream.url, ["--retries", "8", "--deadline", "30s"])
  const lines: Array<string> = []
  try {
    // warm both paths up (the gateway runs from source: its modules load on first use)
    await closedLoopStreams(gateway.url, 20, 2)
    await closedLoop(gateway.url, 32, 3)

    console.error("  capacity ...")
    const directCapacity = await closedLoop(upstream.url, 32, 3)
    const cpuBefore = gateway.cpuMs()
    const gatewayCapacity = await closedLoop(gateway.url, 32, 3)
    const cpuPerRequest = (gateway.cpuMs() - cpuBefore) / (gatewayCapacity * 3)
    console.error("  a load this machine sustains ...")
    const directLight = await openLoop(50, 4, () => whole(upstream.url))
    const gatewayLight = await openLoop(50, 4, () => whole(gateway.url))
    await upstream.set({ chunkDelay: 5 })
    const directFewStreams = await closedLoopStreams(upstream.url, 20, 4)
    let cpu = gateway.cpuMs()
    const gatewayFewStreams = await closedLoopStreams(gateway.url, 20, 4)
    const cpuPerStream = (gateway.cpuMs() - cpu) / gatewayFewStreams.length
    console.error("  200 concurrent streams, a chunk every 25 ms ...")
    await upstream.set({ chunkDelay: 25 })
    const directRealistic = await closedLoopStreams(upstream.url, 200, 6)
    cpu = gateway.cpuMs()
    const gatewayRealistic = await closedLoopStreams(gateway.url, 200, 6)
    const cpuPerRealistic = (gateway.cpuMs() - cpu) / gatewayRealistic.length
    console.error("  200 concurrent streams, a chunk every 5 ms ...")
    await upstream.set({ chunkDelay: 5 })
    const directStreams = await closedLoopStreams(upstream.url, 200, 6)
    const gatewayStreams = await closedLoopStreams(gateway.url, 200, 6)
    console.error("  1,000 whole requests/s ...")
    const directWhole = await openLoop(1000, 5, () => whole(upstream.url))
    await sleep(500)
    const gatewayWhole = await openLoop(1000, 5, () => whole(gateway.url))


    console.error("  the least gateway on @effect/platform, then on node:http, at the same loads ...")
    const added = (direct: ReadonlyArray<{ readonly ms: number }>, through: ReadonlyArray<{ readonly ms: number }>) => {
      const at = (p: number) => (percentile(through.map((r) => r.ms), p) - percentile(direct.map((r) => r.ms), p)).toFixed(2)
      return `${at(50)} / ${at(99)}`
    }
    const floors = [
      `| wiz serve | ${cpuPerRequest.toFixed(2)} | ${cpuPerRealistic.toFixed(2)} | ${added(directRealistic, gatewayRealistic)} | ${added(directWhole, gatewayWhole)} |`
    ]
    for (const [name, kind] of [["a bare `@effect/platform` proxy", "platform"], ["a bare `node:http` proxy", "node"]] as const) {
      const floor = await startChild([floorProxy, kind, upstream.url])
      try {
        await upstream.set({ chunkDelay: 25 })
        await closedLoopStreams(floor.url, 20, 2)
        await closedLoop(floor.url, 32, 3)
        let at = floor.cpuMs()
        const capacity = await closedLoop(floor.url, 32, 3)
        const cpuWhole = (floor.cpuMs() - at) / (capacity * 3)
        at = floor.cpuMs()
        const realistic = await closedLoopStreams(floor.url, 200, 6)
        const cpuStream = (floor.cpuMs() - at) / realistic.length
        await sleep(500)
        const wholes = await openLoop(1000, 5, () => whole(floor.url))
        const failures = [...realistic, ...wholes].filter((r) => !r.ok).length
        floors.push(
          `| ${name}${failures > 0 ? ` (${failures} failed)` : ""} | ${cpuWhole.toFixed(2)} | ${cpuStream.toFixed(2)} | ${added(directRealistic, realistic)} | ${added(directWhole, wholes)} |`
        )
      } finally {
        await floor.stop()
      }
    }

    lines.push(
      `Capacity (32 clients back to back, whole answers, 3 s): ${directCapacity.toFixed(0)} requests/s directly, ` +
        `${gatewayCapacity.toFixed(0)} through wiz serve, which used ${cpuPerRequest.toFixed(2)} ms of CPU per request ` +
        `(its own process: the server side, the agent, the upstream call, the log line); per streamed answer of 20 chunks ` +
        `${cpuPerStream.toFixed(2)} ms with 20 streams (${(cpuPerStream / 23).toFixed(3)} ms per SSE event, 23 an answer), ` +
        `${cpuPerRealistic.toFixed(2)} ms with 200 streams at 25 ms a chunk. Load average at the start ${startLoad}, now ${load()}.`,
      "",
      "| load | direct p50 / p99 (ms) | through wiz serve p50 / p99 (ms) | added p50 (ms) | added p99 (ms) |",
      "|---|---:|---:|---:|---:|",
      row("50 whole requests/s for 4 s", directLight.map((r) => r.ms), gatewayLight.map((r) => r.ms)),
      row(`20 concurrent streams, 20 chunks 5 ms apart (${directFewStreams.length} / ${gatewayFewStreams.length} answers)`, directFewStreams.map((r) => r.ms), gatewayFewStreams.map((r) => r.ms)),
      row(`200 concurrent streams, 20 chunks 25 ms apart (${directRealistic.length} / ${gatewayRealistic.length} answers)`, directRealistic.map((r) => r.ms), gatewayRealistic.map((r) => r.ms)),
      row(`200 concurrent streams, 20 chunks 5 ms apart (${directStreams.length} / ${gatewayStreams.length} answers)`, directStreams.map((r) => r.ms), gatewayStreams.map((r) => r.ms)),
      row(`1,000 whole requests/s for 5 s`, directWhole.map((r) => r.ms), gatewayWhole.map((r) => r.ms))
    )
    lines.push(
      "",
      "The HTTP stack's share: the least gateway (`bench/internal/floorProxy.ts`: it forwards each request and reads and " +
        "writes again each answer and each event, with no policy, log line or metric) on `@effect/platform`, as wiz serve is, " +
        "and on `node:http` alone, at the same loads, against the same direct figures. CPU is the process's own per whole " +
        "request (32 clients back to back) and per streamed answer (200 streams, 25 ms a chunk).",
      "",
      "| through | CPU per request (ms) | CPU per stream (ms) | 200 streams, 25 ms a chunk: added p50 / p99 (ms) | 1,000 requests/s: added p50 / p99 (ms) |",
      "|---|---:|---:|---:|---:|",
      ...floors
    )
    const failed = [...gatewayLight, ...gatewayFewStreams, ...gatewayRealistic, ...gatewayStreams, ...gatewayWhole].filter((r) => !r.ok).length
    lines.push("", `Requests through the gateway that failed in these runs: ${failed}.`)

    console.error("  memory per open stream ...")
    // a fresh gateway, its garbage collected before each reading
    const fresh = await startGateway(upstream.url, [], ["--expose-gc", "--import", gcOnSignal])
    try {
      await upstream.set({ chunkDelay: 1 })
      await closedLoopStreams(fresh.url, 20, 1)
      await sleep(1000)
      await fresh.collect()
      const idleKb = fresh.rssKb()
      const idle = await memoryOf(fresh.url)
      await upstream.set({ stall: true })
      const open = 1000
      const controller = new AbortController()
      const streams = Array.from({ length: open }, () =>
        fetch(`${fresh.url}/chat/completions`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ model: "up", messages, stream: true }),
          signal: controller.signal
        }).then((r) => r.body?.getReader().read()).catch(() => undefined))
      await Promise.all(streams)
      await sleep(1000)
      await fresh.collect()
      const heldKb = fresh.rssKb()
      const held = await memoryOf(fresh.url)
      controller.abort()
      await upstream.set({ stall: false })
      lines.push(
        "",
        `Memory (a fresh wiz serve, garbage collected before each reading): ${((held.heap - idle.heap) / 1024 / open).toFixed(1)} KB of JS heap ` +
          `and ${((held.external - idle.external) / 1024 / open).toFixed(1)} KB of external memory per open stream, with ${open} open ` +
          `(the gateway's side of each: the client's connection, the upstream's, the agent's stream; read from /metrics); ` +
          `RSS ${(idleKb / 1024).toFixed(1)} MB idle and ${(heldKb / 1024).toFixed(1)} MB with them (V8 keeps the pages it collected, so RSS does not measure a stream).`
      )
    } finally {
      await fresh.stop()
    }
    await sleep(2000)

    console.error("  faults: 20% transient, then a 5 s outage ...")
    await upstream.set({ faultRate: 0.2, chunkDelay: 0 })
    const outage = (async () => {
      await sleep(3500)
      await upstream.set({ outage: true })
      await sleep(5000)
      await upstream.set({ outage: false })
    })()
    const faulted = await openLoop(50, 12, () => whole(gateway.url))
    await outage
    const succeeded = faulted.filter((r) => r.ok).length
    lines.push(
      "",
      `Faults (20% transient 503s and a 5 s outage in a 12 s run at 50 requests/s, one attempt per client request): ` +
        `${succeeded} of ${faulted.length} succeeded (${((100 * succeeded) / faulted.length).toFixed(2)}%), p50 ${percentile(faulted.map((r) => r.ms), 50).toFixed(0)} ms, p99 ${
          percentile(faulted.map((r) => r.ms), 99).toFixed(0)
        } ms; failures by status and error code: ${JSON.stringify(statuses(faulted.filter((r) => !r.ok)))}.`
    )

    console.error("  streams cut mid-answer ...")
    await upstream.set({ faultRate: 0, cutRate: 0.25, chunkDelay: 1 })
    const cut = await openLoop(50, 4, () => stream(gateway.url))
    const full = cut.filter((r) => r.finished && !r.errored && r.text.endsWith("word19")).length
    const sseErrors = cut.filter((r) => r.errored && !r.finished).length
    const lies = cut.filter((r) => r.finished && !r.text.endsWith("word19")).length
    lines.push(
      "",
      `Streams cut mid-answer (one in four dropped after 5 of 20 chunks; ${cut.length} streams): ${full} whole answers, ` +
        `${sseErrors} ended with an SSE error event, ${lies} ended with a finish_reason on a short answer.`
    )
  } finally {
    const code = await gateway.stop()
    lines.push("", `wiz serve exited ${code} on SIGTERM.`)
    await upstream.stop()
  }
  console.log(lines.join("\n"))
}

run().then(() => process.exit(0), (error) => {
  console.error(error)
  process.exit(1)
})
