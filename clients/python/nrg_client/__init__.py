"""Python client for nrg-serve: OpenAI-style video jobs steered per request by Flow-NRG reward guidance.

>>> from nrg_client import Client
>>> with Client("http://127.0.0.1:8000") as client:                       # doctest: +SKIP
...     video = client.generate("a red circle moving right", reward_weights={"ta": 1.0}, output="out/")
...     print(video.path, video.rewards)

Depends only on httpx and pydantic (no torch).
"""

__version__ = "0.1.0"

from nrg_client.async_client import AsyncClient  # noqa: E402
from nrg_client.client import Client  # noqa: E402
from nrg_client.errors import (  # noqa: E402
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ClientValidationError,
    ConflictError,
    NotFoundError,
    NRGError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    ServiceUnavailableError,
    UnprocessableEntityError,
    VideoFailedError,
    WaitTimeout,
    WebhookVerificationError,
)
from nrg_client.types import (  # noqa: E402
    Event,
    GeneratedVideo,
    InputReferenceInfo,
    ModelInfo,
    ModelList,
    ObjectiveChange,
    RewardGuidance,
    UnguidedTwin,
    Video,
    VideoDeleted,
    VideoError,
    VideoList,
    WebhookStatus,
)
from nrg_client.webhooks import verify_webhook  # noqa: E402

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncClient",
    "AuthenticationError",
    "BadRequestError",
    "Client",
    "ClientValidationError",
    "ConflictError",
    "Event",
    "GeneratedVideo",
    "InputReferenceInfo",
    "ModelInfo",
    "ModelList",
    "NRGError",
    "NotFoundError",
    "ObjectiveChange",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RateLimitError",
    "RewardGuidance",
    "ServerError",
    "ServiceUnavailableError",
    "UnguidedTwin",
    "UnprocessableEntityError",
    "Video",
    "VideoDeleted",
    "VideoError",
    "VideoFailedError",
    "VideoList",
    "WaitTimeout",
    "WebhookStatus",
    "WebhookVerificationError",
    "__version__",
    "verify_webhook",
]
