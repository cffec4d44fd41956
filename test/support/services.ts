/**
 * The machine's services for the tests that need a real one (Redis, PostgreSQL).
 *
 * A test file asks for a service at its top level:
 *
 * ```ts
 * const redis = await Services.redis()
 * describe.skipIf(!redis.available)("on a real Redis", () => { ... redis.url ... })
 * ```
 *
 * The address comes from `WIZ_REDIS_URL` / `WIZ_POSTGRES_URL` (defaults: the loopback
 * services a developer's machine and CI have). When the service does not answer, its tests are
 * skipped with one line on stderr saying so, unless `WIZ_REQUIRE_SERVICES=1` (which `.ci/run`
 * sets): then the file fails, so CI never passes by skipping them.
 */
import * as Net from "node:net"

export interface Service {
  readonly name: string
  readonly url: string
  readonly available: boolean
}

const required = process.env.WIZ_REQUIRE_SERVICES === "1"

/** Whether something accepts a TCP connection at the URL's host and port within a second. */
const answers = (url: URL, defaultPort: number): Promise<boolean> =>
  new Promise((resolve) => {
    const socket = Net.connect({ host: url.hostname.replace(/^\[|\]$/g, ""), port: Number(url.port || defaultPort) })
    const done = (ok: boolean) => {
      socket.destroy()
      resolve(ok)
    }
    socket.setTimeout(1_000, () => done(false))
    socket.once("connect", () => done(true))
    socket.once("error", () => done(false))
  })

const probe = async (name: string, variable: string, fallback: string, defaultPort: number): Promise<Service> => {
  const url = process.env[variable] ?? fallback
  const available = await answers(new URL(url), defaultPort)
  if (!available) {
    const line = `${name} does not answer at ${url} (${variable})`
    if (required) throw new Error(`${line}, and WIZ_REQUIRE_SERVICES=1 requires it`)
    process.stderr.write(`skipped: the tests that need ${name}: ${line}\n`)
  }
  return { name, url, available }
}

/** Redis, from `WIZ_REDIS_URL` (default `redis://127.0.0.1:6379`). */
export const redis = (): Promise<Service> => probe("Redis", "WIZ_REDIS_URL", "redis://127.0.0.1:6379", 6379)

/** PostgreSQL, from `WIZ_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`). */
export const postgres = (): Promise<Service> => probe(
  "PostgreSQL",
  "WIZ_POSTGRES_URL",
  "postgres://postgres@127.0.0.1:5432/test",
  5432
)

/** A name no other test run uses, for a test's own keys, schema or database. */
export const uniqueName = (prefix: string): string =>
  `${prefix}_${process.pid}_${Math.random().toString(36).slice(2, 10)}`
