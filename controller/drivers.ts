// The platform drivers `muster serve` and `muster plan` load. Until a real
// protocol driver is loaded for a platform, the simulated driver stands in,
// so the whole loop runs (and `npm start` shows it) before any device exists.
import { PLATFORMS, type Platform } from './policy/types.js';
import type { PlatformDriver } from './reconcile/driver.js';
import { createSimulatedDriver } from '../protocols/simulated/driver.js';

export function createDrivers(): Map<Platform, PlatformDriver> {
  return new Map(PLATFORMS.map((p) => [p, createSimulatedDriver(p)]));
}
