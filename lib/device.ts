/** Backend choice (cpu, cuda, auto) and the report of what is available and why not. */
import { SafetyArithmeticError } from './errors';
import { native, nativePath } from './native';

export type Device = 'cpu' | 'cuda' | 'auto';

export interface BackendReport {
  name: 'cpu' | 'cuda';
  available: boolean;
  /** Why the backend cannot be used; empty when it can. */
  reason: string;
  /** Details from the backend: threads for the CPU; GPU name, compute capability, memory, driver for CUDA. */
  details: Record<string, unknown>;
  /** The CUDA backend's library file. */
  library?: string;
}

/** A CPU matmul kernel variant of this build, and whether this CPU (and its OS) runs it. */
export interface CpuKernelVariant {
  name: string;
  /** The instruction sets it needs. */
  needs: string;
  supported: boolean;
  /** The instruction sets this CPU lacks, when it is not supported. */
  missing?: string;
}

/** The CPU kernel variant in use: the best this CPU runs, or the one SAFETY_ARITHMETIC_CPU names. */
export interface CpuKernelReport {
  /** The chosen variant; null when SAFETY_ARITHMETIC_CPU names one that cannot run (see error). */
  chosen: string | null;
  error?: string;
  variants: CpuKernelVariant[];
  /** Whether LoadOptions.matmulPrecision 'bf16' runs (the avx512 variant on a CPU with AVX512_BF16). */
  bf16Products: boolean;
  /** The instruction sets found on this CPU. */
  cpuFeatures: string[];
}

export interface DoctorReport {
  packageVersion: string;
  node: string;
  platform: string;
  addon: string | undefined;
  backends: BackendReport[];
  cpuKernel: CpuKernelReport;
  /** The device that SAFETY_ARITHMETIC_DEVICE (or auto) selects, or an error message. */
  selected: { requested: Device; backend?: 'cpu' | 'cuda'; error?: string };
}

const DEVICES: readonly Device[] = ['cpu', 'cuda', 'auto'];

/** The device asked for: the explicit option, else SAFETY_ARITHMETIC_DEVICE, else auto. */
export function requestedDevice(option?: string): Device {
  const fromEnv = process.env.SAFETY_ARITHMETIC_DEVICE;
  const value = (option ?? (fromEnv && fromEnv.length > 0 ? fromEnv : 'auto')).toLowerCase();
  if (!DEVICES.includes(value as Device)) {
    const where = option !== undefined ? 'device option' : 'SAFETY_ARITHMETIC_DEVICE';
    throw new SafetyArithmeticError('SA_INVALID_ARGUMENT', `${where} is "${value}": use cpu, cuda or auto`, { field: 'device' });
  }
  return value as Device;
}

/** Resolves a device request to a backend; asking for cuda where it cannot run throws and says why. */
export function resolveDevice(option?: string): 'cpu' | 'cuda' {
  const requested = requestedDevice(option);
  try {
    return native().selectBackend(requested) as 'cpu' | 'cuda';
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    throw new SafetyArithmeticError('SA_DEVICE_UNAVAILABLE', message + '\nUse --device cpu (or SAFETY_ARITHMETIC_DEVICE=cpu) to compute on the CPU.', { field: 'device' });
  }
}

export function backends(): BackendReport[] {
  return native()
    .backends()
    .map((b) => {
      const report: BackendReport = {
        name: b.name as 'cpu' | 'cuda',
        available: b.available,
        reason: b.reason,
        details: b.description ? (JSON.parse(b.description) as Record<string, unknown>) : {},
      };
      if (b.library) report.library = b.library;
      return report;
    });
}

/** The CPU kernel variant chosen at load, the variants of this build and the CPU's instruction sets. */
export function cpuKernel(reports: BackendReport[] = backends()): CpuKernelReport {
  const d = reports.find((b) => b.name === 'cpu')?.details ?? {};
  const report: CpuKernelReport = {
    chosen: typeof d.kernel === 'string' ? d.kernel : null,
    variants: Array.isArray(d.kernels) ? (d.kernels as CpuKernelVariant[]) : [],
    bf16Products: d.bf16Products === true,
    cpuFeatures: Array.isArray(d.cpuFeatures) ? (d.cpuFeatures as string[]) : [],
  };
  if (typeof d.kernelError === 'string') report.error = d.kernelError;
  return report;
}

/** What `safety-arithmetic doctor` prints: the backends, the GPU, and why CUDA is not in use when it is not. */
export function doctor(): DoctorReport {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const pkg = require('../../package.json') as { version: string };
  const report: DoctorReport = {
    packageVersion: pkg.version,
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    addon: nativePath(),
    backends: backends(),
    cpuKernel: { chosen: null, variants: [], bf16Products: false, cpuFeatures: [] },
    selected: { requested: 'auto' },
  };
  report.cpuKernel = cpuKernel(report.backends);
  try {
    report.selected.requested = requestedDevice();
    report.selected.backend = resolveDevice();
  } catch (err) {
    report.selected.error = err instanceof Error ? err.message : String(err);
  }
  return report;
}
