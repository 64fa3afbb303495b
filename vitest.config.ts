// Three projects: fast unit tests without sockets, integration tests against real servers, and tests on a
// 3-node nats-server cluster (after the others).
import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    projects: [
      { test: { name: 'unit', include: ['test/unit/**/*.test.ts'], testTimeout: 20_000 } },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          testTimeout: 120_000,
          hookTimeout: 60_000,
          globalSetup: ['test/helpers/global-setup.ts'],
          fileParallelism: false,
        },
      },
      {
        // 3-node nats-server clusters (test/helpers/cluster.ts): fleets, failover. Run on the shipped Node only in CI.
        test: {
          name: 'cluster',
          include: ['test/cluster/**/*.test.ts'],
          // After the other projects: never beside the integration files on a 2-core machine.
          sequence: { groupOrder: 1 },
          testTimeout: 180_000,
          hookTimeout: 90_000,
          globalSetup: ['test/helpers/global-setup.ts'],
          fileParallelism: false,
        },
      },
    ],
  },
})
