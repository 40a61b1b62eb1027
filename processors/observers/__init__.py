"""Observers: they watch a session's frames without touching them (measurement, state).

| module | what |
|---|---|
| `turn_metrics.py` | `TurnMetricsObserver`: each turn's stage timings, texts, outcome |
| `turn_record.py` | `TurnRecord`: one turn's moments, its stage durations and public record |
| `session_state.py` | `SessionStateObserver`: listening, thinking or speaking |
| `provider_errors.py` | `ProviderErrorObserver`: errors and fallbacks by stage and provider |
| `group.py` | `ObserverGroup`: ours sharing one of Pipecat's observer queues |
"""
