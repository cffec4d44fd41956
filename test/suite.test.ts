/**
 * The suite itself (issue 17.8): `npm test` is what a contributor runs after every change, so
 * what keeps it short is pinned here, beside the tests it speeds up.
 */
import { describe, expect, it } from "@effect/vitest"
import { availableParallelism } from "node:os"
import config from "../vitest.config.js"

describe("the test suite", () => {
  it("issue 17.8: test files run on every core and one more, never one worker on a 2-core machine (vitest's default there)", () => {
    const workers = config.test?.maxWorkers
    expect(typeof workers).toBe("number")
    expect(workers).toBeGreaterThan(availableParallelism())
  })
})
