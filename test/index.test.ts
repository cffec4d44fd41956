/**
 * The root import, `wiz-effect`: the gateway is one of its modules, and nothing it loads needs
 * an optional peer (an app with `effect` and `@effect/platform` alone can import it).
 */
import { describe, expect, it } from "@effect/vitest"
import * as esbuild from "esbuild"
import { readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
import * as Wiz from "../src/index.js"

const root = fileURLToPath(new URL("..", import.meta.url))
const manifestOf = (path: string) =>
  JSON.parse(readFileSync(`${root}${path}package.json`, "utf8")) as {
    dependencies?: Record<string, string>
    peerDependenciesMeta?: Record<string, { optional?: boolean }>
  }
const manifest = manifestOf("")
/** What an app with `effect` and `@effect/platform` has: those two and their dependencies, all the way down. */
const required = new Set<string>()
const add = (name: string): void => {
  if (required.has(name)) return
  required.add(name)
  for (const dependency of Object.keys(manifestOf(`node_modules/${name}/`).dependencies ?? {})) add(dependency)
}
add("effect")
add("@effect/platform")

describe("wiz-effect (the root import)", () => {
  it("exports the gateway and its client keys as namespaces", () => {
    expect(typeof Wiz.Gateway.layer).toBe("function")
    expect(typeof Wiz.Gateway.make).toBe("function")
    expect(Wiz.Gateway.defaults.maxQueued).toBeGreaterThan(0)
    expect(typeof Wiz.ClientKeys.parse).toBe("function")
  })

  it("loads no optional peer: every package its module graph reaches comes with effect or @effect/platform", async () => {
    const optional = Object.entries(manifest.peerDependenciesMeta ?? {}).filter(([, meta]) => meta.optional === true).map(([name]) => name)
    expect(optional).toContain("ioredis")
    const built = await esbuild.build({
      absWorkingDir: root,
      entryPoints: ["src/index.ts"],
      bundle: true,
      write: false,
      platform: "node",
      format: "esm",
      metafile: true,
      logLevel: "silent"
    })
    const packages = new Set(
      Object.keys(built.metafile.inputs).flatMap((input) => {
        const found = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(input)
        return found === null ? [] : [found[1]!]
      })
    )
    expect(packages).toContain("effect")
    expect([...packages].filter((name) => optional.includes(name))).toEqual([])
    expect([...packages].filter((name) => !required.has(name))).toEqual([])
  })
})
