/**
 * A loopback OpenAI-compatible provider with real per-minute limits, in real time, for the
 * tests and benchmarks of several processes on one key (`bench/shared.ts`,
 * `bench/gateway-replicas.ts`, `test/cli/ServeCommand.replicas.test.ts`).
 *
 * One token bucket for tokens (TPM) and one for requests (RPM), refilled continuously, each
 * holding at most a minute's worth, starting at `startShare` of it (a key other work was
 * using). A request takes its prompt plus `max_tokens` and one request when it arrives (as
 * OpenAI counts), and the unused output comes back when it is answered; a request that does
 * not fit is a 429 with OpenAI's `x-ratelimit-*` headers, `retry-after-ms` and `retry-after`.
 * Every answer carries the same headers. The buckets start counting at the first request, not
 * while the clients start.
 */
import * as Http from "node:http"
import type * as Net from "node:net"
import { performance } from "node:perf_hooks"
import * as Tokenizer from "../../src/model/Tokenizer.js"
import { openAiHeaders } from "./FakeProvider.js"

class Bucket {
  level: number
  stamp = performance.now()
  constructor(readonly capacity: number, readonly perMs: number, start: number) {
    this.level = start
  }
  refill(now: number) {
    this.level = Math.min(this.capacity, this.level + (now - this.stamp) * this.perMs)
    this.stamp = now
  }
  /** ms until `amount` fits. */
  waitFor(amount: number) {
    return amount <= this.level ? 0 : (amount - this.level) / this.perMs
  }
  window() {
    return {
      limit: this.capacity,
      remaining: Math.max(0, Math.floor(this.level)),
      resetMillis: Math.ceil((this.capacity - this.level) / this.perMs)
    }
  }
}

export interface Options {
  /** Tokens a minute. */
  readonly tpm: number
  /** Requests a minute. */
  readonly rpm: number
  /** Share of a minute's worth each bucket holds at the first request (default 0.1). */
  readonly startShare?: number
  /** Time to answer a request of `completion` tokens, in ms (default `80 + completion`). */
  readonly latency?: (completion: number) => number
}

export interface Stats {
  requests: number
  /** Requests answered 429. */
  refused: number
  answered: number
  /** Tokens of the answered requests (prompt and completion). */
  tokens: number
  /** `performance.now()` of the first request and of the last answer. */
  first: number
  last: number
}

export interface LimitedProvider {
  /** The base URL, up to `/v1`. */
  readonly url: string
  readonly stats: Stats
  readonly close: () => Promise<void>
}

/** Starts the provider on 127.0.0.1, a free port. */
export const start = (options: Options) =>
  new Promise<LimitedProvider>((resolve) => {
    const startShare = options.startShare ?? 0.1
    const latency = options.latency ?? ((completion: number) => 80 + completion)
    const tokens = new Bucket(options.tpm, options.tpm / 60_000, options.tpm * startShare)
    const requests = new Bucket(options.rpm, options.rpm / 60_000, options.rpm * startShare)
    const stats: Stats = { requests: 0, refused: 0, answered: 0, tokens: 0, first: Infinity, last: 0 }
    const headers = () => openAiHeaders(requests.window(), tokens.window())
    let seed = 7
    const random = () => (seed = (seed * 1_103_515_245 + 12_345) % 2_147_483_648) / 2_147_483_648
    const server = Http.createServer((req, res) => {
      const chunks: Array<Buffer> = []
      req.on("data", (chunk: Buffer) => chunks.push(chunk))
      req.on("end", () => {
        const body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as {
          messages: Array<{ content: string }>
          max_tokens?: number
          max_completion_tokens?: number
        }
        const maxTokens = body.max_completion_tokens ?? body.max_tokens ?? 16
        const now = performance.now()
        stats.requests++
        if (stats.first === Infinity) {
          stats.first = now
          tokens.stamp = requests.stamp = now
        }
        tokens.refill(now)
        requests.refill(now)
        const prompt = body.messages.reduce((sum, message) => sum + Tokenizer.count(message.content), 0)
        const reserved = prompt + maxTokens
        const wait = Math.max(tokens.waitFor(reserved), requests.waitFor(1))
        if (wait > 0) {
          stats.refused++
          res.writeHead(429, {
            "content-type": "application/json",
            "retry-after-ms": String(Math.ceil(wait)),
            "retry-after": String(Math.ceil(wait / 1000)),
            ...headers()
          })
          res.end(JSON.stringify({ error: { message: "Rate limit reached", type: "requests", code: "rate_limit_exceeded" } }))
          return
        }
        tokens.level -= reserved
        requests.level -= 1
        const completion = Math.max(1, Math.round(maxTokens * (0.4 + 0.6 * random())))
        setTimeout(() => {
          const end = performance.now()
          tokens.refill(end)
          requests.refill(end)
          tokens.level = Math.min(tokens.capacity, tokens.level + maxTokens - completion)
          stats.answered++
          stats.tokens += prompt + completion
          stats.last = Math.max(stats.last, end)
          res.writeHead(200, { "content-type": "application/json", ...headers() })
          res.end(JSON.stringify({
            id: `c${stats.answered}`,
            object: "chat.completion",
            model: "bench",
            choices: [{ index: 0, message: { role: "assistant", content: "word ".repeat(completion).trim() }, finish_reason: "stop" }],
            usage: { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion }
          }))
        }, latency(completion))
      })
    })
    server.keepAliveTimeout = 60_000
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as Net.AddressInfo
      resolve({
        url: `http://127.0.0.1:${port}/v1`,
        stats,
        close: () =>
          new Promise((done) => {
            server.closeAllConnections()
            server.close(() => done())
          })
      })
    })
  })
