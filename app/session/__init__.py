"""The session core: one transcription session, whatever front-end carries it."""

from app.session.core import (
    ProviderSwitched,
    Session,
    SessionCreated,
    SessionEnded,
    SessionError,
    SessionEvent,
    SessionWarning,
    open_session,
)

__all__ = ["ProviderSwitched", "Session", "SessionCreated", "SessionEnded", "SessionError",
           "SessionEvent", "SessionWarning", "open_session"]
