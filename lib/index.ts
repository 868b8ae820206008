/** safety-arithmetic: Safety Arithmetic (Hazra et al., EMNLP 2024) for Hugging Face checkpoints. */
export { removeHarmDirection, METADATA_FILE, COPIED_FILES } from './hdr';
export type { HdrOptions, HdrSummary, HdrProgress, HdrMode } from './hdr';
export { doctor, backends, resolveDevice, requestedDevice } from './device';
export type { Device, DoctorReport, BackendReport } from './device';
export { SafetyArithmeticError, ERROR_CODES, ERROR_CODE_MEANINGS } from './errors';
export type { ErrorCode, ErrorDetails } from './errors';
export { planOutputs } from './io/output';
export type { FileOutputOptions, OutputInput, OutputRequest } from './io/output';
export { resolveLayers } from './layers';
export type { LayersInput } from './layers';
export { openCheckpoint, layerOf } from './checkpoint/checkpoint';
export type { Checkpoint } from './checkpoint/checkpoint';
export { readSafetensorsHeader } from './checkpoint/safetensors';
export type { SafetensorsHeader, TensorInfo } from './checkpoint/safetensors';
export { readHarmVector } from './harm-vector';
export type { HarmVectorFile } from './harm-vector';
export { align } from './align';
export type { AlignOptions, AlignSummary } from './align';
export { LanguageModel } from './model/model';
export type { KvCacheDtype, LoadOptions, MatmulPrecision, ForwardOptions, ForwardResult, GenerateOptions, GenerateRequest, GenerateResult, GeneratedToken, GenerationStats, StepEvent, SteerRequest, SteeringVectorHandle, TokensOrText } from './model/model';
export { readModelConfig, parseModelConfig, SUPPORTED_ARCHITECTURES, CONFIG_LIMITS } from './model/config';
export type { ModelConfig, Architecture } from './model/config';
export { computeIcv, saveIcv, loadIcv, checkIcvFits, readDemos, defaultDemosFile, modelFingerprint, DEFAULT_ALPHA, ICV_FILE } from './icv';
export type { InContextVector, DemoPair, IcvOptions } from './icv';
export { steerWithIcv, steerActivations } from './steering';
export { evaluate, sweep, readPromptSet, parsePromptSet, answerAndJudge, ruleJudge, hasRefusalPhrase, REFUSAL_PHRASES, LlmJudge, DEFAULT_JUDGE_TEMPLATE, matches, settingMetrics, headline, wilson, EVAL_FILES } from './eval';
export type {
  EvaluateOptions, EvalModel, EvalResult, EvalSummary, EvalSettingSummary, EvalCommonOptions, EvalProgress, SweepOptions, SweepSummary, SweepPoint, SweepRecommendation,
  PromptItem, PromptKind, PromptSets, Verdict, RuleVerdict, LlmJudgeOptions, LlmVerdict, Matcher, MatcherType, AnswerRecord, SettingMetrics, Headline, Rate,
} from './eval';
export { TextTokenizer, CHAT_TEMPLATE_LIMITS } from './text';
export type { ChatMessage } from './text';
export { exportControlVector } from './export';
export type { ControlVectorExport } from './export';
export { writeControlVectorGguf, readControlVectorGguf } from './gguf';
export type { ControlVectorFile } from './gguf';
export { createServer, SERVER_DEFAULTS, ApiError } from './server';
export type { SafetyServer, ServerOptions, ResolvedServerOptions, LogFormat } from './server';
