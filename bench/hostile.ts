/**
 * Issue 18: peak memory of `wiz run` and `wiz ask`, run from source (`node --import tsx
 * src/cli/main.ts`, as a user trying the repository does) in child processes, against a hostile
 * OpenAI-compatible server on loopback: compressed bodies that inflate to 200 MB and 1 GB, a
 * compressed error body, compressed event streams whose line or total never ends, a stream
 * that trickles a token every 250 ms, one that runs far past its `maxTokens`, and a plain
 * answer as the baseline. Each row is one child process; its peak RSS is the kernel's
 * high-water mark (`process.resourceUsage().maxRSS`, written at exit by
 * `internal/peakRss.ts`), so no peak between samples is missed. The target is under 300 MB in
 * every row: the baseline (the CLI and tsx compiling it, answering one plain task) is most of it.
 *
 * `wiz run` gets eight tasks, eight at a time (its default concurrency; `--retries 0`), so each
 * bomb is inflating eight times at once; `wiz ask` one prompt. The server
 * runs in this process (its memory is not counted), writes compressed bodies only as fast as
 * the client reads them, and says how many bytes went on the wire before the client stopped.
 *
 * Run with `npm run bench -- hostile` (about a minute). Not a timed test: the wall times are
 * printed for the trickle row (it must end at its --deadline) and as a sanity check.
 */
import { spawn } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import * as Http from "node:http"
import { createRequire } from "node:module"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"
import * as Zlib from "node:zlib"

const main = fileURLToPath(new URL("../src/cli/main.ts", import.meta.url))
const tsx = pathToFileURL(createRequire(import.meta.url).resolve("tsx")).href
const peakRss = pathToFileURL(fileURLToPath(new URL("internal/peakRss.ts", import.meta.url))).href
const MiB = 1024 * 1024

// -----------------------------------------------------------------------------
// the hostile server
// -----------------------------------------------------------------------------

/**
 * A gzip body inflating to `prefix`, `size` bytes of `unit` repeated, then `suffix`: gzip
 * members concatenated (a valid gzip stream), the 16 MiB member compressed once and sent again
 * and again, only as fast as the client reads.
 */
const gzipBomb = (prefix: string, unit: string, size: number, suffix: string) => {
  const block = Buffer.alloc(16 * MiB - ((16 * MiB) % unit.length), unit)
  const full = Zlib.gzipSync(block)
  const rest = size % block.length
  const members: Array<Buffer> = [Zlib.gzipSync(Buffer.from(prefix))]
  for (let i = 0; i < Math.floor(size / block.length); i++) members.push(full)
  members.push(Zlib.gzipSync(Buffer.concat([block.subarray(0, rest), Buffer.from(suffix)])))
  return { members, wire: members.reduce((sum, member) => sum + member.length, 0) }
}

interface Sent {
  wire: number
  finished: boolean
}

type Reply = (res: Http.ServerResponse, sent: Sent) => void

const sendMembers = (status: number, contentType: string, bomb: ReturnType<typeof gzipBomb>): Reply => (res, sent) => {
  res.writeHead(status, { "content-type": contentType, "content-encoding": "gzip", "content-length": String(bomb.wire) })
  let next = 0
  const more = () => {
    while (next < bomb.members.length) {
      const member = bomb.members[next++]!
      sent.wire += member.length
      if (!res.write(member)) return void res.once("drain", more)
    }
    res.end(() => (sent.finished = true))
  }
  more()
}

const chunk = (content: string) => `data: ${JSON.stringify({ choices: [{ index: 0, delta: { content }, finish_reason: null }] })}\n\n`

/** An event stream of `count` one-word chunks, `every` ms apart, then the end. */
const trickle = (count: number, every: number): Reply => (res, sent) => {
  res.writeHead(200, { "content-type": "text/event-stream" })
  let i = 0
  const timer = setInterval(() => {
    if (res.destroyed) return void clearInterval(timer)
    if (i++ < count) {
      const text = chunk(" tok")
      sent.wire += text.length
      res.write(text)
      return
    }
    clearInterval(timer)
    res.end(`${chunk("")}data: [DONE]\n\n`, () => (sent.finished = true))
  }, every)
  res.on("close", () => clearInterval(timer))
}

/** An event stream of `count` one-word chunks as fast as the client reads them. */
const flood = (count: number): Reply => (res, sent) => {
  res.writeHead(200, { "content-type": "text/event-stream" })
  let i = 0
  const more = () => {
    while (i < count && !res.destroyed) {
      i++
      const text = chunk(" word")
      sent.wire += text.length
      if (!res.write(text)) return void res.once("drain", more)
    }
    res.end("data: [DONE]\n\n", () => (sent.finished = true))
  }
  more()
}

const plain: Reply = (res, sent) => {
  const body = JSON.stringify({
    choices: [{ index: 0, message: { role: "assistant", content: "A plain answer." }, finish_reason: "stop" }],
    usage: { prompt_tokens: 5, completion_tokens: 3, total_tokens: 8 }
  })
  res.writeHead(200, { "content-type": "application/json", "content-length": String(body.length) })
  sent.wire += body.length
  res.end(body, () => (sent.finished = true))
}

const plainStream: Reply = (res, sent) => {
  res.writeHead(200, { "content-type": "text/event-stream" })
  const body = `${chunk("A plain")}${chunk(" answer.")}data: ${JSON.stringify({ choices: [{ index: 0, delta: {}, finish_reason: "stop" }] })}\n\ndata: [DONE]\n\n`
  sent.wire += body.length
  res.end(body, () => (sent.finished = true))
}

const completionPrefix = "{\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\""
const completionSuffix = "\"},\"finish_reason\":\"stop\"}]}"

interface Case {
  readonly name: string
  readonly command: "run" | "ask"
  readonly reply: () => Reply
  readonly args?: ReadonlyArray<string>
}

const cases: ReadonlyArray<Case> = [
  { name: "baseline: a plain answer", command: "run", reply: () => plain },
  { name: "baseline: a plain stream", command: "ask", reply: () => plainStream },
  {
    name: "gzip answer, 200 MB inflated (200 KB on the wire)",
    command: "run",
    reply: () => sendMembers(200, "application/json", gzipBomb(completionPrefix, "x", 200 * MiB, completionSuffix))
  },
  {
    name: "gzip answer, 1 GB inflated (1 MB on the wire)",
    command: "run",
    reply: () => sendMembers(200, "application/json", gzipBomb(completionPrefix, "x", 1024 * MiB, completionSuffix))
  },
  {
    name: "gzip error body (500), 60 MB inflated (60 KB on the wire)",
    command: "run",
    reply: () => sendMembers(500, "application/json", gzipBomb("{\"error\":{\"message\":\"", "x", 60 * MiB, "\"}}"))
  },
  {
    name: "gzip event stream, one 1 GB line",
    command: "ask",
    reply: () => sendMembers(200, "text/event-stream", gzipBomb("data: ", "x", 1024 * MiB, "\n\n"))
  },
  {
    name: "gzip event stream, 200 MB of empty chunks",
    command: "ask",
    reply: () => sendMembers(200, "text/event-stream", gzipBomb("", "data: {\"choices\":[{\"delta\":{}}]}\n\n", 200 * MiB, ""))
  },
  {
    name: "a token every 250 ms, --deadline 5s",
    command: "ask",
    reply: () => trickle(100_000, 250),
    args: ["--deadline", "5s"]
  },
  { name: "a stream far past its maxTokens (1M words)", command: "ask", reply: () => flood(1_000_000) }
]

// -----------------------------------------------------------------------------
// running wiz
// -----------------------------------------------------------------------------

interface Measured {
  readonly code: number | null
  readonly peakMiB: number
  readonly seconds: number
  readonly outcome: string
}

const runWiz = (baseUrl: string, command: "run" | "ask", args: ReadonlyArray<string>, dir: string): Promise<Measured> => {
  const rssFile = join(dir, `rss-${Math.random().toString(36).slice(2)}`)
  const tasks = join(dir, "tasks.jsonl")
  writeFileSync(tasks, Array.from({ length: 8 }, (_, i) => JSON.stringify({ id: `t${i}`, prompt: `Summarise: task ${i}.` })).join("\n") + "\n")
  const commandArgs = command === "run"
    ? ["run", tasks, "--no-progress"]
    : ["ask", "Say something."]
  const started = performance.now()
  const child = spawn(process.execPath, [
    "--import",
    tsx,
    "--import",
    peakRss,
    main,
    ...commandArgs,
    "--retries",
    "0",
    "--model",
    "openai-compatible",
    "--base-url",
    baseUrl,
    "--model-name",
    "hostile",
    "--api-key-env",
    "WIZ_BENCH_KEY",
    ...args
  ], { env: { ...process.env, WIZ_BENCH_KEY: "bench-key-0123456789abcdef", WIZ_BENCH_RSS_FILE: rssFile }, stdio: ["ignore", "pipe", "pipe"] })
  let stdout = ""
  let stderr = ""
  child.stdout.setEncoding("utf8").on("data", (text: string) => (stdout += text))
  child.stderr.setEncoding("utf8").on("data", (text: string) => (stderr += text))
  return new Promise((resolve) =>
    child.on("close", (code) => {
      const seconds = (performance.now() - started) / 1000
      const peakMiB = Number(readFileSync(rssFile, "utf8")) / 1024
      const outcome = command === "run"
        ? stdout.split("\n").filter((line) => line !== "").map((line) => {
          const record = JSON.parse(line)
          return record.status === "succeeded" ? "succeeded" : `${record.error._tag}: ${record.error.message}`
        })[0] ?? stderr.trim()
        : code === 0
        ? "answered"
        : stderr.trim().split("\n")[0] ?? ""
      resolve({ code, peakMiB, seconds, outcome: outcome.length > 110 ? `${outcome.slice(0, 109)}…` : outcome })
    })
  )
}

const serve = (handler: Http.RequestListener): Promise<{ readonly server: Http.Server; readonly port: number }> =>
  new Promise((resolve) => {
    const server = Http.createServer(handler)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      resolve({ server, port: typeof address === "object" && address !== null ? address.port : 0 })
    })
  })

const dir = mkdtempSync(join(tmpdir(), "wiz-hostile-"))
let current: Reply = plain
let sent: Array<Sent> = []
const { port, server } = await serve((req, res) => {
  req.resume()
  const record: Sent = { wire: 0, finished: false }
  sent.push(record)
  current(res, record)
})

console.log("| case | command | peak RSS | wall | sent by the server | outcome |")
console.log("|---|---|---:|---:|---|---|")
let worst = 0
for (const hostile of cases) {
  current = hostile.reply()
  sent = []
  const measured = await runWiz(`http://127.0.0.1:${port}/v1`, hostile.command, hostile.args ?? [], dir)
  worst = Math.max(worst, measured.peakMiB)
  const wire = sent.map((s) => `${(s.wire / 1024).toFixed(0)} KB${s.finished ? "" : " (stopped)"}`).join(", ")
  console.log(
    `| ${hostile.name} | wiz ${hostile.command} | ${measured.peakMiB.toFixed(0)} MB | ${measured.seconds.toFixed(1)} s | ${wire} | ${measured.outcome.replaceAll("|", "\\|")} |`
  )
}
console.log(`\nworst peak RSS: ${worst.toFixed(0)} MB (target: under 300 MB in every case)`)
server.closeAllConnections()
server.close()
rmSync(dir, { recursive: true, force: true })
