"""The local models and what serves them: loading the shipped weights once per process
(`models`), Pipecat's Whisper, Piper, Silero and smart-turn services over them (`services`),
Whisper's fitted window and eager passes (`whisper_window`, `eager_whisper`), and the
loopback llama.cpp server with its KV-cache shift (`llm_server`, `llm_cache`, `llm_process`).
`bot/providers.py` chooses between these and the cloud services."""
