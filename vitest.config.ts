import { availableParallelism } from "node:os"
import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // the wiz executable bundled once for the run, for the end-to-end tests
    globalSetup: ["test/support/wizBin.ts"],
    // Every timed behaviour runs under TestClock, so no test needs a long timeout.
    testTimeout: 30_000,
    // vitest's default is one worker per core but one: on 2 cores, a single worker, and the
    // whole suite on one core while the other idles. The test files are independent (each owns
    // its files, ports, keys and schemas) and spend much of their time waiting (a TestClock waits
    // real timer turns before each sleeper it wakes; the end-to-end tests wait on processes), so
    // one more worker than cores: on 2 cores, npm test took 186 s with 2 workers, 153 s with 3.
    maxWorkers: availableParallelism() + 1
  }
})
