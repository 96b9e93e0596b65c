"""Fakes of the providers' real protocols, one module per provider, for adapter and e2e tests.

Each fake listens on a free 127.0.0.1 port, judges the adapter as the real service would
(auth scheme, required parameters, audio format and pacing) and answers with realistic
message sequences produced by `tests.fakes.recognizer.Recognizer`.
"""
