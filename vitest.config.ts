import { availableParallelism } from "node:os"
import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Every timed behaviour runs under TestClock, so no test needs a long timeout.
    testTimeout: 30_000,
    // vitest's default is one worker per core but one: on 2 cores, a single worker, and the
    // whole suite on one core while the other idles. The test files are CPU-bound (TestClock)
    // and independent (each owns its files, ports, keys and schemas), so take every core.
    maxWorkers: Math.max(2, availableParallelism() - 1)
  }
})
