// Waking Apple devices: the driver's wake() looks up each device's push token
// and PushMagic (from its last TokenUpdate) and asks APNs to push. Only
// enrolled devices with a token are pushed; a 410 marks the token dead, so it
// is not pushed again until the device sends a new TokenUpdate.
import type { Store } from '../../controller/store/index.js';
import type { ApnsClient } from './apns.js';
import type { AppleLog } from './service.js';

export function appleWake(store: Store, apns: Pick<ApnsClient, 'push'>, log: AppleLog): (deviceIds: readonly string[]) => Promise<void> {
  return async (deviceIds) => {
    const targets = [];
    for (const id of deviceIds) {
      const e = await store.devices.getEnrollment(id);
      const s = e?.state as { token?: string; pushMagic?: string; tokenUnregisteredAt?: string } | undefined;
      if (e?.status !== 'enrolled' || !s?.token || !s.pushMagic || s.tokenUnregisteredAt) continue;
      targets.push({ deviceId: id, token: s.token, pushMagic: s.pushMagic });
    }
    if (targets.length === 0) return;
    const results = await apns.push(targets);
    let failed = 0;
    for (const r of results) {
      if (r.status === 'unregistered') {
        await store.devices.patchEnrollmentState(r.deviceId, { tokenUnregisteredAt: new Date().toISOString() });
        log.warn('APNs says the device token is no longer valid; waiting for a new TokenUpdate', { udid: r.deviceId });
      } else if (r.status === 'failed') failed++;
    }
    if (failed) log.warn('some pushes failed; those devices get their work at their next check-in', { failed, of: targets.length });
  };
}
