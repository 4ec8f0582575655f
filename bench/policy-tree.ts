// Generates a large, valid policy repository for benchmarks: realistic bundles
// (passcode, restrictions, Wi-Fi, apps, native settings), groups by department
// and platform, and staged rollouts.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface TreeSize {
  bundles: number;
  groups: number;
  rollouts: number;
}

export function writePolicyTree(dir: string, size: TreeSize): void {
  for (const sub of ['bundles', 'groups', 'rollouts']) mkdirSync(join(dir, sub), { recursive: true });
  for (let i = 0; i < size.bundles; i++) {
    writeFileSync(
      join(dir, 'bundles', `bundle-${i}.yaml`),
      `apiVersion: muster.dev/v1alpha1
kind: PolicyBundle
metadata:
  name: bundle-${i}
  labels:
    team: team-${i % 17}
spec:
  version: 1.${i % 7}.${i % 13}
  description: Generated bundle ${i}
  settings:
    passcode:
      required: true
      minLength: ${6 + (i % 10)}
      complexity: alphanumeric
      maxFailedAttempts: ${5 + (i % 6)}
      maxInactivityMinutes: ${1 + (i % 15)}
    encryption:
      required: true
    restrictions:
      allowCamera: ${i % 2 === 0}
      allowScreenCapture: ${i % 3 === 0}
      allowRemovableStorage: false
    wifi:
      - ssid: Corp-${i % 50}
        security: wpa2-personal
        password: \${secret:WIFI_${i % 50}}
        autoJoin: true
    apps:
      - name: chat-${i % 5}
        installType: required
        apple: { bundleId: com.example.chat${i % 5} }
        android: { packageName: com.example.chat${i % 5} }
  windows:
    settings:
      - omaUri: ./Device/Vendor/MSFT/Policy/Config/Browser/AllowPasswordManager
        format: int
        value: ${i % 2}
  compliance:
    - name: encrypted
      encryptionRequired: true
`,
    );
  }
  for (let i = 0; i < size.groups; i++) {
    writeFileSync(
      join(dir, 'groups', `group-${i}.yaml`),
      `apiVersion: muster.dev/v1alpha1
kind: DeviceGroup
metadata:
  name: group-${i}
spec:
  description: Department ${i}
  selector:
    matchLabels:
      department: dept-${i}
    matchExpressions:
      - key: muster.dev/ownership
        operator: In
        values: [corporate]
`,
    );
  }
  for (let i = 0; i < size.rollouts; i++) {
    writeFileSync(
      join(dir, 'rollouts', `rollout-${i}.yaml`),
      `apiVersion: muster.dev/v1alpha1
kind: Rollout
metadata:
  name: rollout-${i}
spec:
  bundle: bundle-${i % size.bundles}
  groups: [group-${i % size.groups}]
  steps:
    - setWeight: 1
    - pause: { duration: 1h }
    - setWeight: 10
    - analysis: { maxFailureRate: 0.02, minReports: 20 }
    - setWeight: 100
  progressDeadline: 24h
  autoRollback: true
`,
    );
  }
}
