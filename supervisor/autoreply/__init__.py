"""AI auto-reply: incoming one-to-one messages answered through an OpenAI-compatible provider.

- :mod:`.settings`: a device's :class:`AiSettings` and their stored form.
- :mod:`.prompt`: a chat's recent messages turned into the provider's ``messages``.
- :mod:`.provider`: the chat-completions request and :class:`~.provider.ProviderError`.
- :mod:`.guards`: the operator pause and the per-chat rate cap.
- :mod:`.service`: :class:`AutoReply`, the service the composition root (``api.server``)
  builds and starts.
"""

from supervisor.autoreply.service import AutoReply
from supervisor.autoreply.settings import AiSettings

__all__ = ["AiSettings", "AutoReply"]
