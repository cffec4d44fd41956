import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Every timed behaviour runs under TestClock, so no test needs a long timeout.
    testTimeout: 30_000
  }
})
