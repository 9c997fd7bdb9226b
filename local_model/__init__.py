"""The bundled local model: SmolLM2-135M-Instruct on llama-cpp-python's OpenAI-compatible server.

A model provider, not a serving surface: graph/ reaches it only through the model factory
(`graph/models.py`), whose `prepare` hook starts the server when a plan uses a `local:` model.

- `settings`: where it listens, its state files and the llama.cpp configuration (env at call time);
- `processes`: finding, watching and stopping server processes (psutil);
- `launcher`: status, start (one server shared across processes, a file lock) and stop;
- `server`: the server process itself (llama_cpp.server with the fixes it needs).
"""
