// A simulated fleet for the simulated driver: devices with realistic labels
// and attributes that take their commands from the queue, apply them, and
// report back — completed or failed, and what they now hold — the way a real
// device answers its MDM. Used by tests, the benchmark and `npm start`.
import { createHash } from 'node:crypto';
import type { Platform } from '../../controller/policy/types.js';
import { deviceLifecycle, type DeviceLifecycle } from '../../controller/devices/lifecycle.js';
import { REPORTED_ITEMS } from '../../controller/reconcile/reconciler.js';
import type { ReportedItems } from '../../controller/reconcile/driver.js';
import type { Command, DeviceInput, Store } from '../../controller/store/index.js';
import { ADMIN, INSTALL, REMOVE, type InstallPayload } from './driver.js';

export interface FleetOptions {
  store: Store;
  /** Names devices `${prefix}-00042`. */
  prefix?: string;
  /** Return an error message to make this install fail on this device. */
  fails?: (item: InstallPayload, deviceId: string) => string | undefined;
  /** Called after a device reported (the reconciler's deviceReported, in tests that drive it directly). */
  onReport?: (deviceId: string) => Promise<void>;
  /**
   * Publish a `device.reported` event in the report's own transaction, as the
   * protocol endpoints do: a crash between the report and its event can then
   * lose neither (`muster serve --simulate`).
   */
  publishReports?: boolean;
  /** Devices that never connect (ids), to model an offline share. */
  offline?: ReadonlySet<string>;
  now?: () => Date;
}

/** A deterministic, realistic spread of platforms, owners and departments. */
export function fleetDevices(count: number, prefix = 'sim'): DeviceInput[] {
  const out: DeviceInput[] = [];
  for (let i = 0; i < count; i++) {
    const r = createHash('sha256').update(`${prefix}:${i}`).digest();
    const platform: Platform = r[0]! % 10 < 5 ? 'apple' : r[0]! % 10 < 8 ? 'windows' : 'android';
    const os = platform === 'apple' ? (r[1]! % 3 === 0 ? 'ios' : 'macos') : platform;
    const ownership = r[2]! % 100 < 85 ? 'corporate' : 'byod';
    const department = ['engineering', 'sales', 'finance', 'support', 'operations'][r[3]! % 5]!;
    const labels: Record<string, string> = { department };
    if (platform === 'android' && r[4]! % 100 < 15) labels.role = 'kiosk';
    const version = { macos: '15.2', ios: '18.2', windows: '10.0.26100', android: '15' }[os as 'macos'] ?? '1';
    out.push({
      id: `${prefix}-${String(i).padStart(5, '0')}`,
      platform,
      serialNumber: r.subarray(5, 11).toString('hex').toUpperCase(),
      model: { apple: os === 'ios' ? 'iPhone16,1' : 'Mac15,3', windows: 'Latitude 7450', android: 'Pixel 8' }[platform as 'apple'],
      osVersion: version,
      labels,
      attributes: { os, ownership },
    });
  }
  return out;
}

export class SimulatedFleet {
  private readonly store: Store;
  private readonly o: FleetOptions;
  private readonly lifecycle: DeviceLifecycle;
  /** Admin actions the simulated devices carried out, in order. */
  readonly adminLog: Array<{ deviceId: string; kind: string }> = [];

  constructor(o: FleetOptions) {
    this.store = o.store;
    this.o = o;
    this.lifecycle = deviceLifecycle(o.store, o.now ? { now: o.now } : {});
  }

  /** Enrolls `count` devices (idempotent). */
  async enroll(count: number): Promise<DeviceInput[]> {
    const devices = fleetDevices(count, this.o.prefix);
    for (let i = 0; i < devices.length; i += 2000) await this.store.devices.upsertMany(devices.slice(i, i + 2000));
    return devices;
  }

  /**
   * Every device with work connects once: takes its commands, applies them
   * and reports. Returns how many commands were answered.
   */
  async step(limit = 5000): Promise<number> {
    let answered = 0;
    for (const id of await this.store.commands.devicesWithDueCommands(limit)) {
      if (this.o.offline?.has(id)) continue;
      answered += await this.connect(id);
    }
    return answered;
  }

  /** Runs step() until no device has work left (or `rounds` passes). */
  async settle(rounds = 20): Promise<number> {
    let total = 0;
    for (let i = 0; i < rounds; i++) {
      const n = await this.step();
      total += n;
      if (n === 0) break;
    }
    return total;
  }

  /** One device's session: everything queued for it, answered in order. */
  async connect(deviceId: string): Promise<number> {
    // A simulated device answers at once, so a short lease: when the process dies mid-answer (a crash, a
    // restart), what it had taken is delivered again within seconds, not after the queue's default 5 minutes.
    const commands = await this.store.commands.nextForDevice(deviceId, { limit: 50, leaseMs: 5_000 });
    if (commands.length === 0) return 0;
    const now = this.o.now?.() ?? new Date();
    await this.store.transaction(async (tx) => {
      const outcomes: Array<{ uuid: string; error: string | undefined }> = [];
      await this.lifecycle.updateReported<ReportedItems>(
        deviceId,
        REPORTED_ITEMS,
        (prev) => {
          const items: ReportedItems['items'] = { ...(prev?.items ?? {}) };
          for (const c of commands) outcomes.push({ uuid: c.uuid, error: this.apply(c, deviceId, items) });
          return { items };
        },
        tx,
        { publish: !!this.o.publishReports, at: now },
      );
      for (const { uuid, error } of outcomes) await this.store.commands.report(uuid, error ? { status: 'failed', error } : { status: 'completed' }, tx);
      await this.store.devices.touch(deviceId, now, tx);
    });
    await this.o.onReport?.(deviceId);
    return commands.length;
  }

  /** Changes what a device holds behind the controller's back (for drift tests). */
  async tamper(deviceId: string, itemId: string, hash: string | null): Promise<void> {
    await this.store.transaction((tx) =>
      this.lifecycle.updateReported<ReportedItems>(
        deviceId,
        REPORTED_ITEMS,
        (prev) => {
          const items = { ...(prev?.items ?? {}) };
          if (hash === null) delete items[itemId];
          else items[itemId] = { hash, status: 'installed' };
          return { items };
        },
        tx,
        { publish: !!this.o.publishReports, at: this.o.now?.() ?? new Date() },
      ),
    );
    await this.o.onReport?.(deviceId);
  }

  private apply(c: Command, deviceId: string, items: ReportedItems['items']): string | undefined {
    if (c.type === INSTALL) {
      const p = c.payload as InstallPayload;
      const error = this.o.fails?.(p, deviceId);
      items[p.id] = error ? { hash: p.hash, status: 'failed', error } : { hash: p.hash, status: 'installed' };
      return error;
    }
    if (c.type === REMOVE) {
      delete items[(c.payload as { id: string }).id];
      return undefined;
    }
    if (c.type === ADMIN) {
      this.adminLog.push({ deviceId, kind: (c.payload as { kind: string }).kind });
      return undefined;
    }
    return `unknown command type ${c.type}`;
  }
}
