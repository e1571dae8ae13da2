"""L4: what runs the engine: Flux / AsyncFlux and their loop thread, the batch runner, the webhook receiver,
settings resolution (environment, login, %config), key storage, and the one place that starts the bundled sandbox.
"""
