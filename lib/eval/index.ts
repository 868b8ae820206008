/** Measuring Safety Arithmetic: eval (prompt sets, judges, metrics, report) and sweep. */
export { evaluate, evalReportHtml } from './evaluate';
export type { EvaluateOptions, EvalModel, EvalResult, EvalSummary, EvalSettingSummary } from './evaluate';
export type { EvalCommonOptions } from './inputs';
export { EVAL_FILES } from './inputs';
export { answerAndJudge } from './run';
export type { EvalProgress, Judges, RunOptions, SettingRun, SettingResult } from './run';
export { readPromptSet, parsePromptSet, PROMPT_KINDS } from './prompts';
export type { PromptItem, PromptKind, PromptSets } from './prompts';
export { ruleJudge, hasRefusalPhrase, REFUSAL_PHRASES, REFUSAL_WINDOW, VERDICTS } from './judges';
export type { Verdict, RuleVerdict } from './judges';
export { LlmJudge, DEFAULT_JUDGE_TEMPLATE, LLM_JUDGE_DEFAULTS, parseJudgeReply } from './llm-judge';
export type { LlmJudgeOptions, LlmVerdict, JudgeRequest } from './llm-judge';
export { matches, MATCHER_TYPES } from './matchers';
export type { Matcher, MatcherType } from './matchers';
export { settingMetrics, headline } from './metrics';
export type { AnswerRecord, SettingMetrics, RequestMetrics, UtilityMetrics, CategoryMetrics, Headline } from './metrics';
export { wilson, Z95 } from './stats';
export type { Rate } from './stats';
