"""The session core: one transcription session, whatever front-end carries it."""

from app.session.core import Session, State, open_session
from app.session.events import (
    ProviderSwitched,
    SessionCreated,
    SessionEnded,
    SessionError,
    SessionEvent,
    SessionWarning,
)

__all__ = ["ProviderSwitched", "Session", "SessionCreated", "SessionEnded", "SessionError",
           "SessionEvent", "SessionWarning", "State", "open_session"]
