"""The front-ends: each translates one wire protocol to the session core (``app.session``)."""
