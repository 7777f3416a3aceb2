/**
 * `npm run drills`: every reliability drill, one after the other, then docs/RELIABILITY.md.
 * DRILLS=full for the larger sizes; DRILLS_ONLY=id1,id2 to run some (only their rows and sections of the report are rewritten).
 * @type {import('jest').Config}
 */
module.exports = {
  rootDir: '..',
  testEnvironment: 'node',
  roots: ['<rootDir>/drills'],
  testMatch: ['**/*.drill.ts'],
  transform: { '^.+\\.ts$': ['ts-jest', { tsconfig: '<rootDir>/tsconfig.json' }] },
  testTimeout: 15 * 60 * 1000,
  verbose: false,
};
