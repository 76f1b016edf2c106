"""The chat service's settings and state, shared by its parts (``core.service``)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from weakref import WeakValueDictionary

from core.handoff import Handoffs
from core.image_prep import DEFAULT_MEMORY_BYTES, ImagePreparer
from core.images import DEFAULT_MAX_SIDE
from core.inbox import replica_name
from core.knowledge.search import Searcher
from core.limits import Limits
from core.media.documents import MAX_DOCUMENT_BYTES
from core.media.reader import DocumentReader
from core.media.transcribe import Transcriber
from core.media.video import FRAME_SIDE, MAX_VIDEO_SECONDS
from core.media.watch import DEFAULT_VIDEO_FRAMES, VideoReader
from core.memory import MemoryOptions, Summariser
from core.model.base import ModelClient
from core.profiles import Profile
from core.stops import Stops
from core.store import Store
from core.store.documents import DocumentStore
from core.tokens import TokenCounter, counter_for
from core.tools import AgentLoop, Registry, Toolbox
from core.vision import Vision


@dataclass(frozen=True, slots=True)
class ServiceOptions:
    """Settings the service needs, read once at the entry point."""

    model: str
    profiles: Mapping[str, Profile] = field(default_factory=lambda: {"default": Profile()})
    default_profile: str = "default"
    stream: bool = True
    max_image_side: int = DEFAULT_MAX_SIDE
    # Bytes all turns' image decoding may hold at once (see core.image_prep).
    image_memory_bytes: int = DEFAULT_MEMORY_BYTES
    max_images: int = 10
    max_document_bytes: int = MAX_DOCUMENT_BYTES
    # Frames of one message's videos together, and the longest video watched.
    max_video_frames: int = DEFAULT_VIDEO_FRAMES
    max_video_seconds: float = MAX_VIDEO_SECONDS
    video_file_bytes: int = 0  # a video this small is also sent whole (video_url); 0: never
    model_choices: tuple[str, ...] = ()
    limits: Limits = field(default_factory=Limits)
    # Which models take images; shared with the model stack's ImageGate.
    vision: Vision = field(default_factory=Vision)
    tools: Registry = field(default_factory=Registry)
    # Speech to text for voice notes and audio (CHATBRIDGE_ASR_MODEL and the client that
    # sends recordings to it, core.media.transcribe.AudioClient); unset: a note.
    asr_model: str | None = None
    asr_client: ModelClient | None = None
    turn_seconds: float | None = None
    secrets: tuple[str, ...] = ()
    memory: MemoryOptions = field(default_factory=MemoryOptions)


class ServiceBase:
    """The service's parts: store, model, options, and the helpers every step uses."""

    def __init__(self, *, store: Store, model: ModelClient, options: ServiceOptions,
                 knowledge: Searcher | None = None) -> None:
        self._store = store
        self._knowledge = knowledge
        self._model = model
        self._options = options
        self._locks: WeakValueDictionary[tuple[str, str], asyncio.Lock] = WeakValueDictionary()
        self._counters: dict[str, TokenCounter] = {}
        self._rules = options.limits.rules()
        self._images = ImagePreparer(max_side=options.max_image_side,
                                     memory_bytes=options.image_memory_bytes)
        self._documents = DocumentReader(DocumentStore(store), self._images.budget,
                                         max_bytes=options.max_document_bytes)
        self._videos = VideoReader(self._images.budget, max_frames=options.max_video_frames,
                                   max_seconds=options.max_video_seconds,
                                   max_side=min(FRAME_SIDE, options.max_image_side),
                                   file_bytes=options.video_file_bytes)
        self._transcriber = Transcriber(options.asr_client, options.asr_model,
                                        self._images.budget) \
            if options.asr_client is not None and options.asr_model else None
        self._agent = AgentLoop(model, secrets=options.secrets)
        self._toolboxes: dict[str, Toolbox] = {}
        self.memory = Summariser(store=store, model=model, owner=replica_name(),
                                 counter=self._counter, options=options.memory)
        self.stops = Stops(store)  # "stop generating", across replicas
        self._handoffs = Handoffs(store)

    def profile(self, name: str | None) -> Profile:
        """The named profile, or the default one."""
        profiles = self._options.profiles
        return profiles.get(name or "", profiles[self._options.default_profile])

    def model_for(self, profile: Profile) -> str:
        """The model a profile uses."""
        return profile.model or self._options.model

    @property
    def model_client(self) -> ModelClient:
        """The model client (for side calls such as the handoff notice's summary)."""
        return self._model

    def _counter(self, model: str) -> TokenCounter:
        if model not in self._counters:
            self._counters[model] = counter_for(model)
        return self._counters[model]
