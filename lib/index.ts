/** safety-arithmetic: Safety Arithmetic (Hazra et al., EMNLP 2024) for Hugging Face checkpoints. */
export { removeHarmDirection, METADATA_FILE, COPIED_FILES } from './hdr';
export type { HdrOptions, HdrSummary, HdrProgress, HdrMode } from './hdr';
export { doctor, backends, resolveDevice, requestedDevice } from './device';
export type { Device, DoctorReport, BackendReport } from './device';
export { SafetyArithmeticError } from './errors';
export type { ErrorCode, ErrorDetails } from './errors';
export { openCheckpoint, layerOf } from './checkpoint/checkpoint';
export type { Checkpoint } from './checkpoint/checkpoint';
export { readSafetensorsHeader } from './checkpoint/safetensors';
export type { SafetensorsHeader, TensorInfo } from './checkpoint/safetensors';
export { readHarmVector } from './harm-vector';
export type { HarmVectorFile } from './harm-vector';
