// What the Android suites share lives beside the simulator, so the benchmark runs on the same rig.
export * from '../../protocols/android/simulator/rig.js';
