"""The local models and what serves them: loading the shipped weights once per process
(`models`); Pipecat's Whisper, Piper, Silero and smart-turn services over them, one copy
shared by every session (`whisper_stt`, `piper_tts`, `silero_vad`, `smart_turn`); Whisper's
fitted window and eager passes (`whisper_window`, `eager_whisper`); and the loopback
llama.cpp server (`llm_server`: the HTTP app; `llm_engine`: the model, with its KV-cache
shift in `llm_cache`; `tool_call_policy`: speech or tool calls), started by `llm_process`.
`bot/providers.py` chooses between these and the cloud services."""
